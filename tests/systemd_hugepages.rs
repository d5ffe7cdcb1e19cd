//! `systemd/tapflow-hugepages.sh`, the unit's ExecStartPre, run against fake kernel files:
//! it raises the hugepage reservation to what is asked, rounding up to whole pages, never
//! lowers it, and fails clearly on bad input. (Mounting is not exercised: the fake mount
//! table already lists the mount point.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

struct FakeKernel {
    dir: PathBuf,
    page_kb: u64,
}

impl FakeKernel {
    /// A meminfo with `page_kb` hugepages, `reserved` of them reserved, and a mount table
    /// with hugetlbfs mounted on the fake mount point.
    fn new(page_kb: u64, reserved: u64) -> FakeKernel {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tapflow-hugepages-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let pages = dir.join(format!("sysfs/hugepages-{page_kb}kB"));
        std::fs::create_dir_all(&pages).unwrap();
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        std::fs::write(pages.join("nr_hugepages"), format!("{reserved}\n")).unwrap();
        std::fs::write(
            dir.join("meminfo"),
            format!("MemTotal:       16000000 kB\nHugePages_Total:    {reserved}\nHugepagesize:       {page_kb} kB\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("mounts"),
            format!(
                "proc /proc proc rw 0 0\nhugetlbfs {} hugetlbfs rw,relatime,pagesize={page_kb}k 0 0\n",
                dir.join("mnt").display()
            ),
        )
        .unwrap();
        FakeKernel { dir, page_kb }
    }

    fn reserved(&self) -> u64 {
        let path = self
            .dir
            .join(format!("sysfs/hugepages-{}kB/nr_hugepages", self.page_kb));
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn run(&self, megabytes: &str) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/tapflow-hugepages.sh");
        Command::new("sh")
            .arg(script)
            .env("TAPFLOW_HUGEPAGES_MB", megabytes)
            .env("TAPFLOW_MEMINFO", self.dir.join("meminfo"))
            .env("TAPFLOW_HUGEPAGES_SYSFS", self.dir.join("sysfs"))
            .env("TAPFLOW_MOUNTS", self.dir.join("mounts"))
            .env("TAPFLOW_HUGEPAGES_DIR", self.dir.join("mnt"))
            .output()
            .unwrap()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn raises_the_reservation_to_whole_pages() {
    let kernel = FakeKernel::new(2048, 0);
    let out = kernel.run("2048");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(kernel.reserved(), 1024);
    assert!(text(&out.stdout).contains("reserved 1024 pages of 2048 kB"));

    // 1 GB pages: 1500 MB needs two of them.
    let kernel = FakeKernel::new(1_048_576, 0);
    let out = kernel.run("1500");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(kernel.reserved(), 2);
}

#[test]
fn never_lowers_an_existing_reservation() {
    let kernel = FakeKernel::new(2048, 3000);
    let out = kernel.run("2048");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(kernel.reserved(), 3000);
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn zero_megabytes_does_nothing() {
    let kernel = FakeKernel::new(2048, 7);
    std::fs::remove_file(kernel.dir.join("meminfo")).unwrap();
    let out = kernel.run("0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(kernel.reserved(), 7);
}

#[test]
fn bad_input_fails_with_a_reason() {
    let kernel = FakeKernel::new(2048, 0);
    let out = kernel.run("2G");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("TAPFLOW_HUGEPAGES_MB=2G is not a number of MB"));
    assert_eq!(kernel.reserved(), 0);

    std::fs::write(kernel.dir.join("meminfo"), "MemTotal: 1 kB\n").unwrap();
    let out = kernel.run("2048");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no hugepage support"),
        "{}",
        text(&out.stderr)
    );
}
