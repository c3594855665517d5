//! go-kit style Endpoints over instances discovered by `svckit-registry`.
