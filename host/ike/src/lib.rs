//! wisp-ike (work in progress)
