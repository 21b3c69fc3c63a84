"""HTTP API and dashboard: thin views over the analytics, pricing and store services (nothing imports api)."""
