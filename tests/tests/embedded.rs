//! Every contract and end-to-end case on the embedded backend: files, SQLite, a local P-256 key.

use helix_tests::Backend;

helix_tests::common_suite!(Backend::Embedded);

helix_tests::cases!(Backend::Embedded;
    embedded_data_dir_is_private_and_its_secret_files_are_0600,
    an_empty_presign_secret_refuses_to_start,
);
