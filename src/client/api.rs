//! The `/v1` JSON API client (being written).
