//! A minimal Server-Sent Events reader for tests: `id`, `event` and `data` fields.

use std::time::Duration;

/// One received event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Opens `url`, sending `Last-Event-ID` when given. Panics unless it answers 200.
    pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = http.get(url).timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("event stream request");
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::OK,
            "event stream status"
        );
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event, or `None` when none arrives within `timeout` or the stream ends.
    /// Comment lines (keep-alives) are skipped.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = SseMessage {
                    id: None,
                    event: "message".into(),
                    data: serde_json::Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        msg.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        msg.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                msg.data = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
                return Some(msg);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
