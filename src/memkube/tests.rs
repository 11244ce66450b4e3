//! Tests of the in-memory API server through real `kube` clients.
