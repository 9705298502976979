//! The data directory is private to the user Wisp runs as: the directory
//! and every directory Wisp (or sled) makes in it are 0700, their files
//! 0600, and the admin token file is refused unless only its owner can
//! read it.
//!
//! Modes are set explicitly (`chmod`), never left to the process umask:
//! `wisp-host` is a library too, and a library must not change its host
//! process's umask. What the explicit modes cannot cover is a file sled
//! creates later by itself (a snapshot, a blob of a large value): it gets
//! the umask's mode, but inside a 0700 directory no other user can reach
//! it. The `wisp` binary also sets its umask to 077 when it serves, so those
//! files are 0600 as well (see `wisp serve`).

use std::fs::{File, Permissions};
use std::io::Read as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt,
};
use std::path::Path;

use anyhow::{Context as _, bail};

/// The mode of the directories in the data directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of the files in the data directory.
pub(crate) const FILE_MODE: u32 = 0o600;
/// The admin token's file in the data directory.
pub(crate) const TOKEN_FILE: &str = "admin-token";
/// A token file longer than this is not a token Wisp wrote.
const MAX_TOKEN_FILE: u64 = 4096;

/// Creates `dir` (and its missing parents) as a private directory, or makes
/// an existing one private (logged: it was readable by others until now).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let existed = dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading the mode of {}", dir.display()))?
        .mode()
        & 0o777;
    if mode == DIR_MODE {
        return Ok(());
    }
    // The umask can only have taken bits away from a new one: set it exactly.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).with_context(|| {
        format!(
            "making {} private (chmod 700 {0}); Wisp needs a directory of its own, owned by the \
             user it runs as",
            dir.display()
        )
    })?;
    if existed && mode & 0o077 != 0 {
        tracing::info!(
            dir = %dir.display(),
            was = format!("{mode:04o}"),
            "the directory was accessible to other users; tightened to 0700"
        );
    }
    Ok(())
}

/// Sets every directory under `dir` (itself included) to 0700 and every
/// file to 0600, not following symbolic links (a link is left as it is: its
/// target is not Wisp's). Returns how many entries changed.
pub(crate) fn make_private(dir: &Path) -> std::io::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed meanwhile (a sled snapshot replaced, say).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let want = if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            DIR_MODE
        } else if meta.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        if meta.mode() & 0o777 != want {
            match std::fs::set_permissions(&path, Permissions::from_mode(want)) {
                Ok(()) => changed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(changed)
}

/// Opens `path` for reading without following a symbolic link in its last
/// component (`O_NOFOLLOW`), and without waiting for a writer if it is a
/// FIFO (`O_NONBLOCK`, which changes nothing for a regular file): what is
/// there is checked before it is read.
pub(crate) fn open_no_follow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Whether `path` is a symbolic link (after an `O_NOFOLLOW` open failed:
/// the error itself differs between systems).
pub(crate) fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The effective user id of this process.
fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// Reads the admin token from `admin-token` in the data directory, or
/// generates one there (0600) on first start.
///
/// The file is checked every time: a symbolic link is not followed, and a
/// file another user owns, or that anyone but its owner may read or write,
/// is refused with how to fix it; its token may have been read (or set) by
/// someone else, so Wisp does not quietly tighten it.
pub(crate) fn load_or_create_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(TOKEN_FILE);
    let shown = path.display();
    match open_no_follow(&path) {
        Ok(file) => {
            let meta = file
                .metadata()
                .with_context(|| format!("reading the mode of {shown}"))?;
            check_token_file(&path, &meta, euid())?;
            let mut token = String::new();
            file.take(MAX_TOKEN_FILE + 1)
                .read_to_string(&mut token)
                .with_context(|| format!("reading {shown}"))?;
            if token.len() as u64 > MAX_TOKEN_FILE {
                bail!(
                    "{shown} is larger than {MAX_TOKEN_FILE} bytes: not an admin token; remove \
                     it to generate a new one, or set WISP_ADMIN_TOKEN"
                );
            }
            let token = token.trim();
            if !token.is_empty() {
                return Ok(token.to_string());
            }
            // Empty (a crash while it was first written): a new token below.
        }
        Err(_) if is_symlink(&path) => bail!(
            "{shown} is a symbolic link; Wisp does not follow links for its admin token: replace \
             it with the file itself (mode 600), remove it to generate a new token, or set \
             WISP_ADMIN_TOKEN"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    // Not following a link here either: one planted between the check above
    // and this write must not send the token elsewhere.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("creating {shown}"))?;
    // Exactly 0600 whatever the umask took away (the owner must read it).
    f.set_permissions(Permissions::from_mode(FILE_MODE))
        .with_context(|| format!("chmod 600 {shown}"))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %shown, "generated an admin token (readable by its owner only)");
    Ok(token)
}

/// Refuses a token file that is not a regular file owned by `euid` with no
/// permissions for group or others.
fn check_token_file(path: &Path, meta: &std::fs::Metadata, euid: u32) -> anyhow::Result<()> {
    let shown = path.display();
    if !meta.is_file() {
        bail!("{shown} is not a regular file; remove it to generate a new admin token");
    }
    if meta.uid() != euid {
        bail!(
            "{shown} belongs to another user (uid {}, Wisp runs as uid {euid}): run `chown {euid} \
             {shown} && chmod 600 {shown}`, or remove it to generate a new token",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{shown} is accessible to other users (mode {mode:04o}): run `chmod 600 {shown}`; \
             the token may have been read, so consider removing the file to generate a new one \
             (or set WISP_ADMIN_TOKEN)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private_and_an_existing_one_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn make_private_sets_files_and_directories_and_leaves_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::fs::write(root.join("sub/deeper/g"), b"y").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"z").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        for (p, m) in [
            (root.clone(), 0o755),
            (root.join("sub"), 0o777),
            (root.join("sub/deeper"), 0o750),
            (root.join("f"), 0o644),
            (root.join("sub/deeper/g"), 0o666),
            (outside.clone(), 0o644),
        ] {
            std::fs::set_permissions(&p, Permissions::from_mode(m)).unwrap();
        }
        assert_eq!(make_private(&root).unwrap(), 5);
        for dir in [&root, &root.join("sub"), &root.join("sub/deeper")] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        for file in [root.join("f"), root.join("sub/deeper/g")] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert_eq!(mode(&outside), 0o644, "a link's target is not touched");
        assert_eq!(make_private(&root).unwrap(), 0, "nothing left to change");
    }

    #[test]
    fn a_token_is_generated_private_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let token = load_or_create_token(tmp.path()).unwrap();
        assert_eq!(token.len(), 64);
        let path = tmp.path().join(TOKEN_FILE);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), token);
        // An empty file (a crash mid-write) gets a new token.
        std::fs::write(&path, b"").unwrap();
        let again = load_or_create_token(tmp.path()).unwrap();
        assert_eq!(again.len(), 64);
        assert_ne!(again, token);
    }

    #[test]
    fn a_token_readable_by_others_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(TOKEN_FILE);
        std::fs::write(&path, b"secret-token\n").unwrap();
        for m in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, Permissions::from_mode(m)).unwrap();
            let e = format!("{:#}", load_or_create_token(tmp.path()).unwrap_err());
            assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
            assert!(e.contains(&format!("mode {m:04o}")), "{e}");
            assert!(!e.contains("secret-token"), "{e}");
        }
        assert_eq!(mode(&path), 0o602, "not changed by Wisp");
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), "secret-token");
        // Owner only, but read-only: fine.
        std::fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), "secret-token");
    }

    #[test]
    fn a_token_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(TOKEN_FILE);
        std::fs::write(&path, b"t").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let e = format!(
            "{:#}",
            check_token_file(&path, &meta, meta.uid() + 1).unwrap_err()
        );
        assert!(e.contains("belongs to another user"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        check_token_file(&path, &meta, meta.uid()).unwrap();
    }

    #[test]
    fn a_token_behind_a_symlink_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(TOKEN_FILE);
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"linked-token").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = format!("{:#}", load_or_create_token(tmp.path()).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        // A dangling link: refused, and nothing is created at its target.
        let missing = tmp.path().join("missing");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&missing, &path).unwrap();
        let e = format!("{:#}", load_or_create_token(tmp.path()).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_fifo_in_place_of_the_token_is_refused_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(TOKEN_FILE);
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let e = format!("{:#}", load_or_create_token(tmp.path()).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_huge_token_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(TOKEN_FILE);
        std::fs::write(&path, vec![b'a'; 5000]).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let e = format!("{:#}", load_or_create_token(tmp.path()).unwrap_err());
        assert!(e.contains("larger than"), "{e}");
    }
}
