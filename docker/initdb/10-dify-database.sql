-- The prompts table lives in its own database, as in the native system test (tests/system).
CREATE DATABASE dify;
