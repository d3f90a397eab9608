//! Example: allow peers only within a UTC time window (uses the host clock).
//!
//! Settings:
//! - `start_hour`, `end_hour` (integers 0..=24, UTC, default 0 and 24): the
//!   window is `start_hour <= hour < end_hour`; `start_hour > end_hour` wraps
//!   over midnight (22 → 6).
//! - `weekdays` (text list, default every day): `mon`, `tue`, ... `sun`; the
//!   weekday of the moment of the decision (UTC).
//! - `allowed_ids` (text list, optional): if set, the identity must also be
//!   listed (exact match).
//!
//! Outside the window `authorize` denies and new Child SAs are refused
//! (`select-proposal` for Child SAs); IKE proposals and selectors use the SDK
//! defaults.

use wisp_plugin_sdk::*;

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct TimeWindow {
    start_hour: u8,
    end_hour: u8,
    /// Bit i set = DAYS[i] allowed.
    weekdays: u8,
    allowed_ids: Option<Vec<String>>,
}

fn hour_setting(s: &Settings, key: &str, default: i64) -> Result<u8, String> {
    let v = s.integer(key)?.unwrap_or(default);
    if !(0..=24).contains(&v) {
        return Err(format!("setting '{key}' must be an hour 0..=24, not {v}"));
    }
    Ok(v as u8)
}

impl TimeWindow {
    /// None when `now` is inside the window, else why not.
    fn outside(&self, now: &Datetime) -> Option<String> {
        let days = now.seconds / 86_400;
        let weekday = ((days + 4) % 7) as usize; // 1970-01-01 was a Thursday
        let secs = now.seconds % 86_400;
        let (hour, minute) = ((secs / 3600) as u8, ((secs % 3600) / 60) as u8);
        if self.weekdays & (1 << weekday) == 0 {
            let allowed: Vec<&str> = (0..7).filter(|i| self.weekdays & (1 << i) != 0).map(|i| DAYS[i]).collect();
            return Some(format!(
                "outside the time window: {} is not an allowed weekday ({})",
                DAYS[weekday],
                allowed.join(", ")
            ));
        }
        let inside = if self.start_hour <= self.end_hour {
            self.start_hour <= hour && hour < self.end_hour
        } else {
            hour >= self.start_hour || hour < self.end_hour
        };
        if !inside {
            return Some(format!(
                "outside the time window: {hour:02}:{minute:02} UTC is not within {:02}:00-{:02}:00 UTC",
                self.start_hour, self.end_hour
            ));
        }
        None
    }
}

impl Policy for TimeWindow {
    const NAME: &'static str = "time-window";
    const VERSION: &'static str = "1.0.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["start_hour", "end_hour", "weekdays", "allowed_ids"])?;
        let start_hour = hour_setting(s, "start_hour", 0)?;
        let end_hour = hour_setting(s, "end_hour", 24)?;
        let weekdays = match s.text_list("weekdays")? {
            None => 0x7f,
            Some(list) => {
                let mut bits = 0u8;
                for d in &list {
                    let d = d.trim().to_ascii_lowercase();
                    let i = DAYS
                        .iter()
                        .position(|x| d.starts_with(x) && d.len() >= 3)
                        .ok_or_else(|| format!("weekdays: '{d}' is not a weekday (mon..sun)"))?;
                    bits |= 1 << i;
                }
                bits
            }
        };
        let allowed_ids = s.text_list("allowed_ids")?;
        Ok(TimeWindow { start_hour, end_hour, weekdays, allowed_ids })
    }

    fn select_proposal(&self, _ctx: &PeerContext, kind: SaKind, offered: &[Proposal], _configured: &[Proposal]) -> Result<ProposalChoice, Refusal> {
        if kind == SaKind::Child {
            if let Some(why) = self.outside(&host::now()) {
                return Err(refuse(format!("new Child SA refused: {why}")));
            }
        }
        if offered.is_empty() {
            return Err(refuse("no proposal offered"));
        }
        Ok(ProposalChoice { proposal: 0, transforms: Vec::new() })
    }

    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        if let Some(ids) = &self.allowed_ids {
            if !ids.contains(&auth.peer_identity.value) {
                return Err(refuse(format!("identity '{}' is not in allowed_ids", auth.peer_identity.value)));
            }
        }
        match self.outside(&host::now()) {
            Some(why) => Err(refuse(why)),
            None => Ok(()),
        }
    }
}

export_policy!(TimeWindow);
