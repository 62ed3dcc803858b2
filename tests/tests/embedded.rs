//! Every contract and end-to-end case on the embedded backend: files, SQLite, a local P-256 key.

use helix_tests::Backend;

helix_tests::common_suite!(Backend::Embedded);
