-- The offline door (API.md `GET /events/:id/door`, `POST .../validate/batch`).
--
-- A ticket's admission is its earliest scan: `checked_in_at` and `checked_in_gate` hold that
-- scan, and an offline scan uploaded later with an earlier time takes its place (a guarded
-- update per scan, so two gates never record two admissions). `changed_at` moves with every
-- change a scanner must hear about (issued, void, checked in), so `since` returns only those;
-- neither column is indexed, so check-ins stay HOT updates (0005).
ALTER TABLE tickets
    ADD COLUMN checked_in_gate TEXT,
    ADD COLUMN changed_at TIMESTAMPTZ NOT NULL DEFAULT now();
