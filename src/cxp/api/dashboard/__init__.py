"""Dashboard pages: safe HTML building, chart specs drawn client-side by plotly, and the static assets."""
