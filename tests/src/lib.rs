//! Test bed for wisp: network namespaces, strongSwan charon, end-to-end and interop suites.
