//! The ImageNet ResNet-18 weights fetched like torchvision does, from a loopback HTTP server:
//! downloaded and verified against the SHA-256 prefix of the file name, and every failure
//! (wrong hash, a download that breaks off, no server) leaving nothing in the cache.

mod common;

use std::collections::HashMap;
use std::path::Path;

use amfmn::checkpoint::pretrained::{fetch, hash_prefix};
use amfmn::fsutil::sha256_hex;
use common::{serve, Served};

/// The names in `dir` (none when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(listing) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = listing.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn the_hash_prefix_is_read_like_torchvision() {
    assert_eq!(hash_prefix("resnet18-f37072fd.pth"), Some("f37072fd"));
    assert_eq!(hash_prefix("resnet18-5c106cde.pth"), Some("5c106cde"));
    assert_eq!(hash_prefix("my-resnet-0a1b.tar.gz"), Some("0a1b"));
    assert_eq!(hash_prefix("resnet18.pth"), None);
    assert_eq!(hash_prefix("resnet18-F37072FD.pth"), None, "torchvision's pattern is lower-case hex");
    assert_eq!(hash_prefix("resnet18-xyz.pth"), None);
}

#[test]
fn downloads_are_verified_and_failures_leave_nothing() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let prefix = &sha256_hex(&body)[..8];
    let good = format!("/resnet18-{prefix}.pth");
    let files = HashMap::from([
        (good.clone(), Served { body: body.clone(), declared_length: body.len() }),
        ("/resnet18-0badc0de.pth".to_owned(), Served { body: body.clone(), declared_length: body.len() }),
        (format!("/cut/resnet18-{prefix}.pth"), Served { body: body[..1000].to_vec(), declared_length: body.len() }),
    ]);
    let base = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("hub/checkpoints");

    let err = format!("{:#}", fetch(&format!("{base}/resnet18-0badc0de.pth"), &dir).unwrap_err());
    assert!(err.contains(&format!("its SHA-256 is {}, its name says 0badc0de", sha256_hex(&body))), "{err}");
    assert!(err.starts_with("cannot download the ImageNet ResNet-18 weights http://"), "{err}");
    assert!(err.ends_with("set model.resnet_weights to it (none trains without ImageNet weights)"), "{err}");
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));

    let err = format!("{:#}", fetch(&format!("{base}/cut/resnet18-{prefix}.pth"), &dir).unwrap_err());
    assert!(err.contains("the connection broke off") && !err.contains("SHA-256 is"), "{err}");
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));

    let err = format!("{:#}", fetch(&format!("{base}/missing-01234567.pth"), &dir).unwrap_err());
    assert!(err.contains("404"), "{err}");
    assert!(names(&dir).is_empty());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/resnet18-{prefix}.pth", closed.local_addr().unwrap());
    drop(closed);
    let err = format!("{:#}", fetch(&down, &dir).unwrap_err());
    assert!(err.contains(&format!("cannot download the ImageNet ResNet-18 weights {down}: ")), "{err}");
    assert!(err.contains("Connection refused") && err.contains("download the file yourself into"), "{err}");
    assert!(names(&dir).is_empty());

    let err = format!("{:#}", fetch(&format!("{base}/resnet18.pth"), &dir).unwrap_err());
    assert!(err.contains("names no file with a SHA-256 prefix"), "{err}");

    let path = fetch(&format!("{base}{good}"), &dir).unwrap();
    assert_eq!(path, dir.join(&good[1..]));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(names(&dir), [&good[1..]]);
}
