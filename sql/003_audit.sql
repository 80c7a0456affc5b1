-- What finance reads: the reconciliation query and views, for the read-only role
-- seqroute_auditor.

-- The views themselves are defined in sql/functions/4_audit_views.sql (replaced whole when that
-- file changes), with their grants to this role.

-- Roles belong to the cluster, not the database: another database being migrated at the
-- same moment may create the role first.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'seqroute_auditor') THEN
        CREATE ROLE seqroute_auditor NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
