-- Alerts (issue 16, second part): what an alert is about when it concerns a product or one of its touchpoints as
-- a whole (incident, health, voice, touchpoint, silence as a share; not one device), so the dashboard's health and
-- touchpoint charts can mark the alerts of their window.
ALTER TABLE alerts ADD COLUMN product_id text, ADD COLUMN touchpoint text;
CREATE INDEX alerts_product_first_seen ON alerts (product_id, first_seen) WHERE product_id IS NOT NULL;
