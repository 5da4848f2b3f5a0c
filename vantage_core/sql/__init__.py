"""SQL helpers below data, eval and augment: parsing and normalization (`parse`, one sqlglot
parse cache and one `SQLParseError`) and the read-only execution sandbox (`execution`)."""
