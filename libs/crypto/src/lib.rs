//! Envelope encryption at rest: AES-256-GCM, wrapped per-(service, tenant) DEKs, chunked AEAD, rotation, crypto-shredding.
