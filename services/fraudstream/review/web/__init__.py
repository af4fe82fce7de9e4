"""The reviewer console: server-rendered pages and the REST API."""
