//! wisp-esp (work in progress)
