//! The tlog-tiles client (being written).
