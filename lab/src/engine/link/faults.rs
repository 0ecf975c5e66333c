//! What can go wrong on one directed link, spelled the way `tc netem` spells it.
//!
//! `delay 100ms 20ms 25% loss 5% rate 1mbit` parses into a [`LinkFaults`]; `heal` (or an empty
//! spec) is no fault at all. The same words are used in scenario YAML, in the console's `:`
//! palette and here, so users' netem habits carry over:
//!
//! | spec | meaning |
//! | --- | --- |
//! | `partition` / `blackhole` | nothing passes; open connections are cut; new ones stall |
//! | `reject` | nothing passes; connections are reset at once |
//! | `delay D [JITTER [CORR%]]` | each packet (UDP) or chunk (TCP) waits D ± JITTER |
//! | `loss P% [CORR%]` | UDP: each datagram dropped with probability P; TCP: see below |
//! | `rate R` | bandwidth cap: `bit`, `kbit`, `mbit`, `gbit` (bits/s); `bps`, `kbps`, `mbps` (bytes/s) |
//! | `duplicate P%` | UDP: a datagram is sent twice with probability P |
//! | `reorder P%` | UDP: a datagram is held back behind the next one with probability P |
//!
//! TCP cannot lose bytes: the kernel retransmits. The honest equivalent of packet loss on a TCP
//! link is a retransmission stall, so `loss P%` on TCP delays a chunk by one retransmission
//! timeout ([`TCP_RETRANSMIT_STALL`]) with probability P. `duplicate` and `reorder` do not apply
//! to TCP (the kernel hides both) and are ignored there.
//!
//! CORR% is netem's correlation: how much the next random draw leans on the previous one
//! (0% independent, 100% always the same), which makes losses come in bursts.

use std::fmt;
use std::time::Duration;

/// How long a TCP chunk is held for a simulated retransmission (Linux's minimum RTO).
pub const TCP_RETRANSMIT_STALL: Duration = Duration::from_millis(200);

/// How a partitioned link treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Like a pulled cable: everything is silently dropped, connections stall.
    Blackhole,
    /// Like a firewall REJECT: connections are reset.
    Reject,
}

/// A probability with netem's optional correlation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chance {
    pub p: f64,
    pub correlation: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    pub base: Duration,
    pub jitter: Duration,
    pub correlation: f64,
}

/// Every fault on one directed link. The default is a healthy link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFaults {
    pub cut: Option<Cut>,
    pub delay: Option<Delay>,
    pub loss: Option<Chance>,
    /// Bytes per second.
    pub rate: Option<u64>,
    pub duplicate: Option<Chance>,
    pub reorder: Option<Chance>,
}

impl LinkFaults {
    pub fn is_healthy(&self) -> bool {
        *self == Self::default()
    }

    /// Parses a netem-style spec. Errors say which word was wrong and what was expected.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let mut faults = Self::default();
        let mut i = 0;
        while i < words.len() {
            let word = words[i];
            i += 1;
            match word {
                "heal" | "clear" | "none" => faults = Self::default(),
                "partition" | "blackhole" => faults.cut = Some(Cut::Blackhole),
                "reject" => faults.cut = Some(Cut::Reject),
                "delay" => {
                    let base = duration(words.get(i), "delay")?;
                    i += 1;
                    let mut delay = Delay {
                        base,
                        jitter: Duration::ZERO,
                        correlation: 0.0,
                    };
                    if let Some(jitter) = words.get(i).and_then(|w| parse_duration(w).ok()) {
                        delay.jitter = jitter;
                        i += 1;
                        if let Some(c) = words.get(i).and_then(|w| percent(w).ok()) {
                            delay.correlation = c;
                            i += 1;
                        }
                    }
                    faults.delay = Some(delay);
                }
                "loss" | "duplicate" | "reorder" => {
                    let p = percent(words.get(i).copied().unwrap_or(""))
                        .map_err(|e| format!("{word} needs a percentage such as 5%: {e}"))?;
                    i += 1;
                    let mut chance = Chance {
                        p,
                        correlation: 0.0,
                    };
                    if let Some(c) = words.get(i).and_then(|w| percent(w).ok()) {
                        chance.correlation = c;
                        i += 1;
                    }
                    match word {
                        "loss" => faults.loss = Some(chance),
                        "duplicate" => faults.duplicate = Some(chance),
                        _ => faults.reorder = Some(chance),
                    }
                }
                "rate" => {
                    let text = words.get(i).copied().unwrap_or("");
                    faults.rate = Some(rate(text)?);
                    i += 1;
                }
                other => {
                    return Err(format!(
                        "unknown link fault {other:?}; expected one of: partition, blackhole, \
                         reject, delay, loss, rate, duplicate, reorder, heal"
                    ));
                }
            }
        }
        Ok(faults)
    }
}

/// Prints the spec back in the form [`LinkFaults::parse`] reads; `healthy` for none.
impl fmt::Display for LinkFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self.cut {
            Some(Cut::Blackhole) => parts.push("partition".to_string()),
            Some(Cut::Reject) => parts.push("reject".to_string()),
            None => {}
        }
        if let Some(d) = self.delay {
            let mut s = format!("delay {}", show_duration(d.base));
            if !d.jitter.is_zero() {
                s += &format!(" {}", show_duration(d.jitter));
                if d.correlation > 0.0 {
                    s += &format!(" {}%", d.correlation * 100.0);
                }
            }
            parts.push(s);
        }
        for (name, chance) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if let Some(c) = chance {
                let mut s = format!("{name} {}%", c.p * 100.0);
                if c.correlation > 0.0 {
                    s += &format!(" {}%", c.correlation * 100.0);
                }
                parts.push(s);
            }
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r}bps"));
        }
        if parts.is_empty() {
            f.write_str("healthy")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// `100ms`, `1.5s`, `250us`: what netem accepts for times.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (us, ms, s)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 100ms"))?;
    let seconds = match unit {
        "us" | "usec" => value / 1e6,
        "ms" | "msec" => value / 1e3,
        "s" | "sec" => value,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use us, ms or s")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn duration(word: Option<&&str>, what: &str) -> Result<Duration, String> {
    let word = word.ok_or_else(|| format!("{what} needs a time such as 100ms"))?;
    parse_duration(word).map_err(|e| format!("{what}: {e}"))
}

fn percent(text: &str) -> Result<f64, String> {
    let number = text
        .strip_suffix('%')
        .ok_or_else(|| format!("{text:?} is not a percentage such as 5%"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage such as 5%"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(value / 100.0)
}

/// tc's units: `bit`, `kbit`, `mbit`, `gbit` are bits per second; `bps`, `kbps`, `mbps`,
/// `gbps` are bytes per second. Returns bytes per second.
fn rate(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("rate {text:?} needs a unit: kbit, mbit, gbit (bits/s) or kbps, mbps (bytes/s)")
        })?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("rate {text:?} is not a number with a unit such as 1mbit"))?;
    let bytes_per_sec = match unit.to_ascii_lowercase().as_str() {
        "bit" => value / 8.0,
        "kbit" => value * 1e3 / 8.0,
        "mbit" => value * 1e6 / 8.0,
        "gbit" => value * 1e9 / 8.0,
        "bps" => value,
        "kbps" => value * 1e3,
        "mbps" => value * 1e6,
        "gbps" => value * 1e9,
        _ => {
            return Err(format!(
                "rate {text:?}: unknown unit {unit:?}; use kbit, mbit, gbit, kbps, mbps"
            ));
        }
    };
    if bytes_per_sec < 1.0 {
        return Err(format!("rate {text:?} is below one byte per second"));
    }
    Ok(bytes_per_sec as u64)
}

fn show_duration(d: Duration) -> String {
    if !d.subsec_micros().is_multiple_of(1000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_habits_parse() {
        let f = LinkFaults::parse("delay 100ms 20ms 25% loss 5% rate 1mbit").unwrap();
        assert_eq!(
            f.delay,
            Some(Delay {
                base: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
                correlation: 0.25
            })
        );
        assert_eq!(
            f.loss,
            Some(Chance {
                p: 0.05,
                correlation: 0.0
            })
        );
        assert_eq!(f.rate, Some(125_000));
        assert_eq!(LinkFaults::parse("rate 10kbps").unwrap().rate, Some(10_000));
        assert_eq!(
            LinkFaults::parse("partition").unwrap().cut,
            Some(Cut::Blackhole)
        );
        assert_eq!(LinkFaults::parse("reject").unwrap().cut, Some(Cut::Reject));
        assert!(LinkFaults::parse("loss 5% heal").unwrap().is_healthy());
        assert!(LinkFaults::parse("").unwrap().is_healthy());
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "delay 100ms 20ms loss 5% 25%",
            "partition",
            "duplicate 1% reorder 10%",
            "rate 1000bps",
            "delay 250us",
        ] {
            let parsed = LinkFaults::parse(spec).unwrap();
            assert_eq!(
                LinkFaults::parse(&parsed.to_string()).unwrap(),
                parsed,
                "{spec}"
            );
        }
        assert_eq!(LinkFaults::default().to_string(), "healthy");
    }

    #[test]
    fn mistakes_say_what_was_expected() {
        let cases = [
            ("delay", "needs a time"),
            ("delay fast", "not a duration"),
            ("loss 5", "percentage"),
            ("loss 150%", "between 0% and 100%"),
            ("rate 10", "needs a unit"),
            ("rate 10furlongs", "unknown unit"),
            ("jitter 5ms", "unknown link fault \"jitter\""),
        ];
        for (spec, expected) in cases {
            let err = LinkFaults::parse(spec).unwrap_err();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }
}
