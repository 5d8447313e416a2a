-- Large jobs train their cross-validation folds as `analysis.fold.requested` work items on any
-- replica (src/jobs/folds.rs). Ids and counts only; the folds' predictions are encrypted objects.
CREATE TABLE IF NOT EXISTS job_fold_plans (
    tenant     text        NOT NULL,
    job        uuid        NOT NULL,
    -- Folds of the job; the fold work items were written to the outbox with this row.
    fold_count integer     NOT NULL CHECK (fold_count >= 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, job),
    FOREIGN KEY (tenant, job) REFERENCES jobs (tenant, id) ON DELETE CASCADE
);

-- A stored fold (`jobs/<job>/folds/<fold>`), recorded once with its audit event.
CREATE TABLE IF NOT EXISTS job_folds (
    tenant     text        NOT NULL,
    job        uuid        NOT NULL,
    fold       integer     NOT NULL CHECK (fold >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, job, fold),
    FOREIGN KEY (tenant, job) REFERENCES jobs (tenant, id) ON DELETE CASCADE
);

-- Row-level security as on `jobs` (20261129180000_analysis_rls.sql).
ALTER TABLE job_fold_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_fold_plans FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_fold_plans USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
ALTER TABLE job_folds ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_folds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_folds USING (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service') WITH CHECK (tenant = current_setting('trustmesh.tenant', true) OR current_setting('trustmesh.scope', true) = 'service');
