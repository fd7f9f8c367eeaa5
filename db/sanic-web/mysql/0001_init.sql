-- sanic-web initial schema (seed 002: `init.sql` imported into sanic_web, utf8mb4).
-- Replace with your release's init.sql; db.init applies it once and records it.
CREATE TABLE IF NOT EXISTS t_user (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    user_name   VARCHAR(64) NOT NULL UNIQUE,
    password    VARCHAR(128) NOT NULL,
    mobile      VARCHAR(32),
    create_time DATETIME DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS t_user_qa_record (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    user_id     BIGINT,
    uuid        VARCHAR(64),
    chat_id     VARCHAR(64),
    question    TEXT,
    to2_answer  LONGTEXT,
    qa_type     VARCHAR(32),
    create_time DATETIME DEFAULT CURRENT_TIMESTAMP,
    KEY idx_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
