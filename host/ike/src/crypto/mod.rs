//! IKEv2 cryptography: PRF/prf+, key derivation, DH, SK payload AEADs, AUTH.
