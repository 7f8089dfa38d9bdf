//! Small value types written by humans in config and campaign files:
//! durations (`90d`), rates (`50/s`) and frequency caps (`3/7d`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a duration, rate or cap could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "invalid duration {0:?}: expected a whole number followed by s, m, h, d or w (for example 90d)"
    )]
    Duration(String),
    #[error("invalid rate {0:?}: expected COUNT/UNIT with unit s, m, h or d (for example 50/s)")]
    Rate(String),
    #[error("invalid frequency cap {0:?}: expected COUNT/DURATION (for example 3/7d)")]
    FrequencyCap(String),
}

/// A span of time written as `<n><unit>` with unit s, m, h, d or w.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    seconds: u64,
    text_unit: char,
}

impl Span {
    pub fn from_secs(seconds: u64) -> Self {
        Span {
            seconds,
            text_unit: 's',
        }
    }
    pub fn as_secs(self) -> u64 {
        self.seconds
    }
    pub fn as_millis(self) -> i64 {
        i64::try_from(self.seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

fn unit_seconds(unit: char) -> Option<u64> {
    Some(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    })
}

impl FromStr for Span {
    type Err = QuantityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError::Duration(text.to_string());
        let t = text.trim();
        let unit = t.chars().last().ok_or_else(err)?;
        let per = unit_seconds(unit).ok_or_else(err)?;
        let digits = &t[..t.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let seconds = n.checked_mul(per).ok_or_else(err)?;
        Ok(Span {
            seconds,
            text_unit: unit,
        })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = unit_seconds(self.text_unit).unwrap_or(1);
        if self.seconds.is_multiple_of(per) {
            write!(f, "{}{}", self.seconds / per, self.text_unit)
        } else {
            write!(f, "{}s", self.seconds)
        }
    }
}

/// A number of events per period, e.g. `50/s` or `1000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Span,
}

impl Rate {
    /// Events per second as a float, for display and arithmetic.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.as_secs().max(1) as f64
    }
}

impl FromStr for Rate {
    type Err = QuantityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError::Rate(text.to_string());
        let (count, unit) = text.trim().split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let unit = unit.trim();
        // `50/s` means per one second; `100/10m` is also accepted.
        let per = if unit.len() == 1 {
            Span::from_str(&format!("1{unit}"))
        } else {
            Span::from_str(unit)
        }
        .map_err(|_| err())?;
        if count == 0 || per.as_secs() == 0 {
            return Err(err());
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.per.to_string();
        match per.strip_prefix('1') {
            Some(unit) if unit.len() == 1 => write!(f, "{}/{}", self.count, unit),
            _ => write!(f, "{}/{}", self.count, per),
        }
    }
}

/// At most `count` campaign emails per customer within `window`, across all campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub count: u32,
    pub window: Span,
}

impl FromStr for FrequencyCap {
    type Err = QuantityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError::FrequencyCap(text.to_string());
        let (count, window) = text.trim().split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let window: Span = window.trim().parse().map_err(|_| err())?;
        if count == 0 || window.as_secs() == 0 {
            return Err(err());
        }
        Ok(FrequencyCap { count, window })
    }
}

impl fmt::Display for FrequencyCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!("90d".parse::<Span>().unwrap().as_secs(), 90 * 86_400);
        assert_eq!("3w".parse::<Span>().unwrap().to_string(), "3w");
        assert_eq!("45s".parse::<Span>().unwrap().as_millis(), 45_000);
        for bad in ["", "d", "10", "1.5d", "-3d", "3y", "3 d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn rates_and_caps() {
        let r: Rate = "50/s".parse().unwrap();
        assert_eq!((r.count, r.per.as_secs()), (50, 1));
        assert_eq!(r.to_string(), "50/s");
        assert_eq!("600/10m".parse::<Rate>().unwrap().per_second(), 1.0);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        let c: FrequencyCap = "3/7d".parse().unwrap();
        assert_eq!((c.count, c.window.as_secs()), (3, 7 * 86_400));
        assert_eq!(c.to_string(), "3/7d");
        assert!("3/7".parse::<FrequencyCap>().is_err());
    }
}
