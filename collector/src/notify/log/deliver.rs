//! Delivery to the log: one JSON line per message in the collector's log
//! (an `info` line of target `driftwatch::notification`), or appended to a
//! file in one write (deliveries run concurrently).

use std::io::Write;

use super::Config;
use crate::notify::{DeliveryError, Message};

/// One attempt: the message as one JSON line.
pub fn send(config: &Config, message: &Message) -> Result<(), DeliveryError> {
    write(config.path.as_deref(), message).map_err(DeliveryError::retry)
}

fn write(path: Option<&std::path::Path>, message: &Message) -> Result<(), String> {
    let line = serde_json::to_string(message).map_err(|e| e.to_string())?;
    match path {
        None => {
            tracing::info!(target: "driftwatch::notification", "notification {line}");
            Ok(())
        }
        // One write per line: deliveries run concurrently, and an
        // appending write of a whole line is not interleaved with another.
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_message as message;

    #[test]
    fn concurrent_deliveries_to_a_log_file_write_whole_lines() {
        let dir = driftwatch_testkit::temp_dir("log");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notifications.jsonl");
        let _ = std::fs::remove_file(&path);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let m = message(&format!("{t}-{i} {}", "x".repeat(300)));
                        write(Some(&path), &m).expect("written");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 200);
        for l in lines {
            let m: Message = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(m.alerts.len(), 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
