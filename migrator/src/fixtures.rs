//! Deterministic generated home directories, for the integration tests and the benchmarks.
//!
//! A seeded generator so every run (ours and the alternative's) sees the same tree: small files
//! in nested directories, optionally one large file, and the awkward cases a real home has:
//! symlinks (inside, absolute-inside, and one trying to escape), hard links, names with spaces
//! and non-UTF-8 bytes, varied modes, and a FIFO (which a sync must skip with a warning).

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone)]
pub struct HomeSpec {
    pub files: usize,
    /// Files per directory (directories are nested two levels deep).
    pub files_per_dir: usize,
    pub min_size: usize,
    pub max_size: usize,
    /// Size of one extra large file, if any.
    pub big_file: Option<u64>,
    /// Add the awkward cases (symlinks, hard links, odd names, FIFO).
    pub odd_entries: bool,
    pub seed: u64,
}

impl HomeSpec {
    pub fn small(files: usize) -> HomeSpec {
        HomeSpec {
            files,
            files_per_dir: 50,
            min_size: 16,
            max_size: 4096,
            big_file: None,
            odd_entries: true,
            seed: 1,
        }
    }
}

/// xorshift64*: fast, deterministic, good enough for file content.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Generates the home under `root` (created if missing). Returns the bytes written.
pub fn generate_home(root: &Path, spec: &HomeSpec) -> std::io::Result<u64> {
    std::fs::create_dir_all(root)?;
    let mut rng = Rng::new(spec.seed);
    let mut total = 0u64;
    let mut buf = vec![0u8; spec.max_size.max(1)];
    let per_dir = spec.files_per_dir.max(1);
    for i in 0..spec.files {
        let d = i / per_dir;
        let dir = root.join(format!("d{:03}/s{:04}", d / 50, d));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let span = (spec.max_size - spec.min_size).max(1) as u64;
        let size = spec.min_size + (rng.next_u64() % span) as usize;
        rng.fill(&mut buf[..size]);
        let p = dir.join(format!("f{i:06}.dat"));
        std::fs::write(&p, &buf[..size])?;
        if i % 7 == 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
        total += size as u64;
    }
    if let Some(big) = spec.big_file {
        let p = root.join("big.bin");
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&p)?);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = big;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            rng.fill(&mut chunk[..n]);
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.flush()?;
        total += big;
    }
    if spec.odd_entries {
        let odd = root.join("odd");
        std::fs::create_dir_all(&odd)?;
        std::fs::write(odd.join("name with spaces.txt"), b"spaces\n")?;
        std::fs::write(
            odd.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
            b"latin1\n",
        )?;
        std::fs::write(odd.join("ünïcødé ✓.txt"), b"utf8\n")?;
        std::fs::write(odd.join("leader.txt"), b"hard linked\n")?;
        std::fs::hard_link(odd.join("leader.txt"), odd.join("second-name.txt"))?;
        std::fs::hard_link(odd.join("leader.txt"), root.join("third-name.txt"))?;
        std::os::unix::fs::symlink("leader.txt", odd.join("link-inside"))?;
        std::os::unix::fs::symlink("../odd/name with spaces.txt", odd.join("link-up-inside"))?;
        std::os::unix::fs::symlink(root.join("odd/leader.txt"), odd.join("link-absolute"))?;
        std::os::unix::fs::symlink("../../../../../../etc/passwd", odd.join("link-escape"))?;
        std::os::unix::fs::symlink("does-not-exist", odd.join("link-dangling"))?;
        let x = odd.join("script.sh");
        std::fs::write(&x, b"#!/bin/sh\necho hi\n")?;
        std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o750))?;
        let fifo = std::ffi::CString::new(odd.join("a-fifo").as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("NUL in path"))?;
        // SAFETY: fifo is a valid NUL-terminated path.
        if unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::create_dir_all(root.join("empty dir"))?;
        total += 7 + 7 + 5 + 12 + 18;
    }
    Ok(total)
}
