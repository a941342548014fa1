//! A real SMTP server for tests (collector/tests/support/smtp_sink.py on
//! aiosmtpd) and the messages it stored.

use std::path::{Path, PathBuf};

/// The `.eml` files in `dir`, oldest first.
pub fn mails(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("mail"))
        .collect()
}

/// A real SMTP server (aiosmtpd in .cache/testenv, installed by
/// scripts/test) that stores each message in `dir`.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> SmtpSink {
        let python = crate::repo(".cache/testenv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run ./scripts/test, which installs aiosmtpd there",
            python.display()
        );
        let mut child = std::process::Command::new(python)
            .arg(crate::repo("collector/tests/support/smtp_sink.py"))
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        SmtpSink {
            child,
            port: line.trim().parse().expect("port number"),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
