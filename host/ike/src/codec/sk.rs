//! Encrypted (SK) and fragmented (SKF) messages: build and open.
