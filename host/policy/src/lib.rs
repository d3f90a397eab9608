//! wisp-policy (work in progress)
