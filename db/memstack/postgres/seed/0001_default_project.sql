-- Initial data (the seed's `make db-init-data`): a default user and project.
INSERT INTO users (email, name) VALUES ('admin@memstack.local', 'Administrator') ON CONFLICT (email) DO NOTHING;
INSERT INTO projects (owner_id, name)
SELECT id, 'default' FROM users WHERE email = 'admin@memstack.local'
AND NOT EXISTS (SELECT 1 FROM projects WHERE name = 'default');
