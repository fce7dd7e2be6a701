-- Schema 2 on SQLite rebuilt the outbox and subscriptions; on PostgreSQL 0001 already creates them so.
SELECT 1;
