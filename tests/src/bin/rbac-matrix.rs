//! Writes the RBAC matrix from the code into docs/security.md (between its markers): `make docs`.

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "docs/security.md".into());
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let updated = helix_tests::rbac::splice(&doc).unwrap_or_else(|| panic!("{path} lacks the rbac-matrix markers"));
    std::fs::write(&path, updated).unwrap();
    eprintln!("updated the RBAC matrix in {path}");
}
