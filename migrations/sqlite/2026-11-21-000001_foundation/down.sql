DROP TABLE api_keys;
DROP TABLE integrations;
DROP TABLE projects;
DROP TABLE teams;
