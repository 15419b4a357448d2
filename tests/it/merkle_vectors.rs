//! The public RFC 6962 / RFC 9162 vectors of transparency-dev/merkle (`tests/data/rfc6962/`,
//! see `SOURCE.md` there) and the known answers of its 8-leaf test tree.
//!
//! # How the vectors encode garbage
//!
//! Hashes are Go `[]byte` values, i.e. standard base64 of arbitrary byte strings. The
//! "garbage" vectors use valid base64 of byte strings that are not 32 bytes long: `""` (empty
//! proof element, empty root or leaf), `"WrongLeaf"`, `"WrongRoot"`, `"don't care 1"`…
//! Our API takes `&[u8; 32]`, so such a value cannot even be passed: it is rejected at the
//! typed boundary. Each vector is therefore checked twice:
//!
//! 1. **Strict**: every hash must decode to exactly 32 bytes, else the vector is *rejected as
//!    malformed*, which counts as a verification failure. This must only happen to vectors
//!    with `wantErr: true`, except where the vector's expected outcome does not depend on the
//!    hash value at all (see 2).
//! 2. **Substituted**: every non-32-byte value is replaced by a stand-in 32-byte hash
//!    (SHA-256 of a domain tag and the raw bytes, so equal garbage maps to equal stand-ins and
//!    different garbage to different ones), and the verifier itself must reach the vector's
//!    outcome. For the garbage vectors that expect an error this shows the verifier rejects
//!    them on its own merits (extra element, wrong root…), not only because of the type.
//!    For the one vector that expects success with garbage (`sizes are equal (one) and proof
//!    is empty`, whose two roots are the same 12-byte string) this checks the semantics the
//!    vector is about: equal sizes, empty proof, equal roots → accepted.
//!    Exactly one garbage vector is wrong *only* because of a length: `empty root and leaf`
//!    (size 1, root and leaf both the empty string, so with any equal stand-ins it is a valid
//!    one-leaf tree). It is rejected by the type boundary alone; the test pins that list so a
//!    new case of this kind is noticed rather than silently accepted.
//!
//! Base64 that does not decode at all would be a broken vector file, not a verification
//! outcome, so it fails the test.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use consent_broker::merkle::{
    EMPTY_ROOT, Hash, MemoryNodes, consistency_proof, inclusion_proof, leaf_hash, node_hash, root,
    verify_consistency, verify_inclusion,
};
use serde::Deserialize;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionVector {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConsistencyVector {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// All `*.json` files below `dir`, sorted so the output is stable.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Raw bytes of a base64 field; undecodable base64 is a broken file, not a vector outcome.
fn raw(path: &Path, b64: &str) -> Vec<u8> {
    STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{}: bad base64 {b64:?}: {e}", path.display()))
}

/// Strict parse: exactly 32 bytes, or `None` (the value cannot cross our typed API).
fn strict(path: &Path, b64: &str) -> Option<Hash> {
    raw(path, b64).try_into().ok()
}

/// Substituted parse: 32-byte values as they are, anything else replaced by a stand-in that
/// preserves equality between garbage values.
fn substituted(path: &Path, b64: &str) -> Hash {
    let bytes = raw(path, b64);
    bytes.clone().try_into().unwrap_or_else(|_| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"rfc6962-vector-garbage-stand-in:");
        ctx.update(&bytes);
        ctx.finish().as_ref().try_into().unwrap()
    })
}

fn strict_all(path: &Path, values: &[&str]) -> Option<Vec<Hash>> {
    values.iter().map(|v| strict(path, v)).collect()
}

#[derive(Debug, Default)]
struct Tally {
    total: usize,
    want_ok: usize,
    want_err: usize,
    verified_strict: usize,
    rejected_malformed: usize,
    malformed_but_ok: Vec<String>,
    rejected_only_by_type: Vec<String>,
}

impl Tally {
    fn print(&self, kind: &str) {
        println!(
            "{kind}: {} vectors ({} expect success, {} expect an error); {} verified with \
             32-byte inputs, {} rejected as malformed (non-32-byte hash, all expect an error), \
             all {} also run through the verifier with stand-ins; expecting success despite \
             malformed hashes: {:?}; rejected only because of a hash length: {:?}",
            self.total,
            self.want_ok,
            self.want_err,
            self.verified_strict,
            self.rejected_malformed,
            self.total,
            self.malformed_but_ok,
            self.rejected_only_by_type
        );
    }
}

/// The one vector whose outcome is success although its hashes are not 32 bytes long.
const MALFORMED_BUT_OK: &[&str] =
    &["consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"];

/// The one vector that is wrong only because its hashes are not 32 bytes long.
const REJECTED_ONLY_BY_TYPE: &[&str] = &["inclusion/single-entry/empty-root-and-leaf.json"];

fn relative(path: &Path) -> String {
    path.strip_prefix(VECTORS)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn inclusion_vectors() {
    let files = json_files(&Path::new(VECTORS).join("inclusion"));
    let mut t = Tally::default();
    for path in &files {
        let v: InclusionVector = load(path);
        let proof: Vec<&str> = v.proof.iter().flatten().map(String::as_str).collect();
        let rel = relative(path);
        let name = format!("{rel} ({})", v.desc);
        t.total += 1;
        if v.want_err {
            t.want_err += 1;
        } else {
            t.want_ok += 1;
        }

        // 1. Strict.
        let mut fields = vec![v.root.as_str(), v.leaf_hash.as_str()];
        fields.extend(&proof);
        let malformed = match strict_all(path, &fields) {
            Some(hashes) => {
                let (r, rest) = hashes.split_first().unwrap();
                let (leaf, p) = rest.split_first().unwrap();
                let got = verify_inclusion(v.leaf_idx, v.tree_size, leaf, p, r);
                assert_eq!(got.is_ok(), !v.want_err, "{name}: {got:?}");
                t.verified_strict += 1;
                false
            }
            None if v.want_err => {
                t.rejected_malformed += 1;
                true
            }
            None => {
                t.malformed_but_ok.push(rel.clone());
                true
            }
        };

        // 2. Substituted: the verifier itself must reach the vector's outcome.
        let r = substituted(path, &v.root);
        let leaf = substituted(path, &v.leaf_hash);
        let p: Vec<Hash> = proof.iter().map(|s| substituted(path, s)).collect();
        let got = verify_inclusion(v.leaf_idx, v.tree_size, &leaf, &p, &r);
        if malformed && v.want_err && got.is_ok() {
            t.rejected_only_by_type.push(rel);
        } else {
            assert_eq!(got.is_ok(), !v.want_err, "{name} (stand-ins): {got:?}");
        }
    }
    t.print("inclusion");
    assert_eq!(t.total, files.len());
    assert!(t.total > 0 && t.want_ok > 0 && t.want_err > 0);
    assert!(t.verified_strict > 0 && t.rejected_malformed > 0);
    assert!(t.malformed_but_ok.is_empty());
    assert_eq!(t.rejected_only_by_type, REJECTED_ONLY_BY_TYPE);
    // Pinned so that losing vector files is noticed.
    assert_eq!((t.total, t.want_ok), (98, 6));
}

#[test]
fn consistency_vectors() {
    let files = json_files(&Path::new(VECTORS).join("consistency"));
    let mut t = Tally::default();
    for path in &files {
        let v: ConsistencyVector = load(path);
        let proof: Vec<&str> = v.proof.iter().flatten().map(String::as_str).collect();
        let rel = relative(path);
        let name = format!("{rel} ({})", v.desc);
        t.total += 1;
        if v.want_err {
            t.want_err += 1;
        } else {
            t.want_ok += 1;
        }

        let mut fields = vec![v.root1.as_str(), v.root2.as_str()];
        fields.extend(&proof);
        let malformed = match strict_all(path, &fields) {
            Some(hashes) => {
                let (r1, rest) = hashes.split_first().unwrap();
                let (r2, p) = rest.split_first().unwrap();
                let got = verify_consistency(v.size1, v.size2, r1, r2, p);
                assert_eq!(got.is_ok(), !v.want_err, "{name}: {got:?}");
                t.verified_strict += 1;
                false
            }
            None if v.want_err => {
                t.rejected_malformed += 1;
                true
            }
            // Cannot cross the typed API; its semantics are checked with stand-ins below.
            None => {
                t.malformed_but_ok.push(rel.clone());
                true
            }
        };

        let r1 = substituted(path, &v.root1);
        let r2 = substituted(path, &v.root2);
        let p: Vec<Hash> = proof.iter().map(|s| substituted(path, s)).collect();
        let got = verify_consistency(v.size1, v.size2, &r1, &r2, &p);
        if malformed && v.want_err && got.is_ok() {
            t.rejected_only_by_type.push(rel);
        } else {
            assert_eq!(got.is_ok(), !v.want_err, "{name} (stand-ins): {got:?}");
        }
    }
    t.print("consistency");
    assert_eq!(t.total, files.len());
    assert!(t.total > 0 && t.want_ok > 0 && t.want_err > 0);
    assert!(t.verified_strict > 0 && t.rejected_malformed > 0);
    assert_eq!(t.malformed_but_ok, MALFORMED_BUT_OK);
    assert!(t.rejected_only_by_type.is_empty());
    assert_eq!((t.total, t.want_ok), (98, 6));
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hash_hex(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

/// transparency-dev/merkle `testonly/constants.go` `LeafInputs()`, the inputs of the
/// vectors' tree (the RFC 6962 test tree of certificate-transparency).
const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `RootHashes()` of the same file, for sizes 1..=8.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn test_tree() -> MemoryNodes {
    let mut nodes = MemoryNodes::new();
    for input in LEAF_INPUTS {
        nodes.push(leaf_hash(&unhex(input))).unwrap();
    }
    nodes
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(
        EMPTY_ROOT,
        hash_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let independent = ring::digest::digest(&ring::digest::SHA256, b"");
    assert_eq!(&EMPTY_ROOT[..], independent.as_ref());
    assert_eq!(root(0, &MemoryNodes::new()).unwrap(), EMPTY_ROOT);
}

#[test]
fn hashing_known_answers() {
    // RFC 6962 §2.1 by hand, independent of the library's prefix constants.
    let sha = |parts: &[&[u8]]| -> Hash {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().try_into().unwrap()
    };
    assert_eq!(leaf_hash(b"L123456"), sha(&[&[0], b"L123456"]));
    let (l, r) = (leaf_hash(b"N123"), leaf_hash(b"N456"));
    assert_eq!(node_hash(&l, &r), sha(&[&[1], &l, &r]));
    assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
    // transparency-dev rfc6962 hasher test: leaf hash of the empty input.
    assert_eq!(
        leaf_hash(b""),
        hash_hex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
}

#[test]
fn test_tree_roots_match_reference() {
    let nodes = test_tree();
    assert_eq!(nodes.size(), 8);
    for (size, want) in (1u64..).zip(ROOTS) {
        assert_eq!(
            root(size, &nodes).unwrap(),
            hash_hex(want),
            "root of {size}"
        );
    }
}

/// Proof *generation* against the vectors: every happy-path vector lives in the 8-leaf test
/// tree, so `inclusion_proof`/`consistency_proof` must reproduce its proof exactly.
#[test]
fn generated_proofs_match_happy_path_vectors() {
    let nodes = test_tree();
    let mut checked = 0;
    for path in json_files(&Path::new(VECTORS).join("inclusion")) {
        if !path.ends_with("happy-path.json") {
            continue;
        }
        let v: InclusionVector = load(&path);
        let want: Vec<Hash> = v
            .proof
            .iter()
            .flatten()
            .map(|s| strict(&path, s).unwrap())
            .collect();
        let input = unhex(LEAF_INPUTS[usize::try_from(v.leaf_idx).unwrap()]);
        assert_eq!(
            leaf_hash(&input),
            strict(&path, &v.leaf_hash).unwrap(),
            "{path:?}"
        );
        assert_eq!(
            root(v.tree_size, &nodes).unwrap(),
            strict(&path, &v.root).unwrap()
        );
        assert_eq!(
            inclusion_proof(v.leaf_idx, v.tree_size, &nodes).unwrap(),
            want,
            "{path:?}"
        );
        checked += 1;
    }
    for path in json_files(&Path::new(VECTORS).join("consistency")) {
        if !path.ends_with("happy-path.json") {
            continue;
        }
        let v: ConsistencyVector = load(&path);
        let want: Vec<Hash> = v
            .proof
            .iter()
            .flatten()
            .map(|s| strict(&path, s).unwrap())
            .collect();
        assert_eq!(
            root(v.size1, &nodes).unwrap(),
            strict(&path, &v.root1).unwrap()
        );
        assert_eq!(
            root(v.size2, &nodes).unwrap(),
            strict(&path, &v.root2).unwrap()
        );
        assert_eq!(
            consistency_proof(v.size1, v.size2, &nodes).unwrap(),
            want,
            "{path:?}"
        );
        checked += 1;
    }
    println!("generated proofs equal to {checked} happy-path vectors");
    assert_eq!(checked, 10);
}
