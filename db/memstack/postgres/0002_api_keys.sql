-- API keys: only a sha256 of each key is stored; the key itself is shown once at creation.
CREATE TABLE IF NOT EXISTS memstack_api_keys (
    name        text PRIMARY KEY,
    key_prefix  text NOT NULL,
    key_sha256  char(64) NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
