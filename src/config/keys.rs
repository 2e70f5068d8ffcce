//! (walker written below)
