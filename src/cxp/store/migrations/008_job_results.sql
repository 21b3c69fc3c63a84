-- Backtest job results in their own tables: the job row keeps status and summary, the bills are rows.
-- Rows are keyed (job_id, plan_idx, row_idx) so a page is one index range scan; row_idx = account index
-- × months + month index, the order BacktestResult.rows() gives (plan, then account, then month).
-- No foreign key on job_bills: its per-row check more than doubled the COPY time; the trigger below
-- deletes a job's bills with the job, and bills are only written in the job runner's transaction.
CREATE TABLE job_bills (
    job_id      uuid NOT NULL,
    plan_idx    integer NOT NULL,
    row_idx     bigint NOT NULL,
    plan_key    text NOT NULL,
    account_id  text NOT NULL,
    segment     text,
    month       date NOT NULL,
    bill        numeric NOT NULL,
    currency    text NOT NULL,
    PRIMARY KEY (job_id, plan_idx, row_idx)
);

-- Per plan of a job: its key and bill count (page totals without counting rows).
CREATE TABLE job_bill_plans (
    job_id      uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    plan_idx    integer NOT NULL,
    plan_key    text NOT NULL,
    bills       bigint NOT NULL,
    PRIMARY KEY (job_id, plan_idx),
    UNIQUE (job_id, plan_key)
);

CREATE FUNCTION job_bills_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_bills WHERE job_id = OLD.job_id;
    RETURN OLD;
END $$;
CREATE TRIGGER jobs_delete_bills AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION job_bills_delete();

ALTER TABLE jobs ADD COLUMN summary jsonb;

-- Jobs finished before this migration kept their bills compactly in result->'bills' (integer quanta per
-- plan × account × month and an active mask): expand them into rows, bill = quanta × the rule's quantum.
INSERT INTO job_bills (job_id, plan_idx, row_idx, plan_key, account_id, segment, month, bill, currency)
SELECT j.job_id, (p.ord - 1)::integer, (a.ord - 1) * jsonb_array_length(b->'months') + (m.ord - 1),
       p.key, a.account_id, b->'segments'->>((a.ord - 1)::integer), m.month::date,
       (b->'quanta'->p.key->((a.ord - 1)::integer)->>((m.ord - 1)::integer))::numeric * (b->'rule'->>'quantum')::numeric,
       b->>'currency'
FROM jobs j
CROSS JOIN LATERAL (SELECT j.result->'bills' AS b) bt
CROSS JOIN LATERAL jsonb_array_elements_text(b->'plan_keys') WITH ORDINALITY p(key, ord)
CROSS JOIN LATERAL jsonb_array_elements_text(b->'account_ids') WITH ORDINALITY a(account_id, ord)
CROSS JOIN LATERAL jsonb_array_elements_text(b->'months') WITH ORDINALITY m(month, ord)
WHERE j.result ? 'bills'
  AND (b->'active'->((a.ord - 1)::integer)->>((m.ord - 1)::integer))::integer = 1;

INSERT INTO job_bill_plans (job_id, plan_idx, plan_key, bills)
SELECT j.job_id, (p.ord - 1)::integer, p.key,
       (SELECT count(*) FROM job_bills jb WHERE jb.job_id = j.job_id AND jb.plan_idx = p.ord - 1)
FROM jobs j
CROSS JOIN LATERAL jsonb_array_elements_text(j.result->'bills'->'plan_keys') WITH ORDINALITY p(key, ord)
WHERE j.result ? 'bills';

UPDATE jobs SET summary = jsonb_build_object('report', result->'report') WHERE result ? 'report';
ALTER TABLE jobs DROP COLUMN result;
