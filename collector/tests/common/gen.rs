//! The fixture generator of `fixtures/generate.py`, bit for bit: a seeded
//! xorshift64* and only IEEE-exact arithmetic, so no dataset is committed.

use serde_json::Value;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        Rng(if s == 0 { 1 } else { s })
    }

    pub fn u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn uniform(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// One generated cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Missing,
    Num(f64),
    Int(i64),
    Str(String),
    Bool(bool),
}

fn f(spec: &Value, key: &str) -> f64 {
    spec[key]
        .as_f64()
        .unwrap_or_else(|| panic!("spec field {key} in {spec}"))
}

pub fn column(spec: &Value, n: usize) -> Vec<Cell> {
    let mut rng = Rng::new(spec["seed"].as_u64().expect("seed"));
    let kind = spec["kind"].as_str().expect("kind");
    let missing = spec.get("missing").and_then(Value::as_f64).unwrap_or(0.0);
    let infs = spec.get("infs").and_then(Value::as_f64).unwrap_or(0.0);
    let normal = |rng: &mut Rng| {
        let mut s = 0.0;
        for _ in 0..12 {
            s += rng.uniform();
        }
        f(spec, "mean") + f(spec, "sd") * (s - 6.0)
    };
    (0..n)
        .map(|_| {
            let v = match kind {
                "normal" => Cell::Num(normal(&mut rng)),
                "rounded" => Cell::Num((normal(&mut rng) * 10.0).floor() / 10.0),
                "uniform" => {
                    Cell::Num(f(spec, "lo") + (f(spec, "hi") - f(spec, "lo")) * rng.uniform())
                }
                "pareto" => Cell::Num(f(spec, "scale") / (1.0 - rng.uniform())),
                "int" => {
                    let power = spec.get("power").and_then(Value::as_f64).unwrap_or(1.0);
                    let u = rng.uniform();
                    // Python's `u ** 1.0` is u; other powers go through pow() on both sides.
                    let p = if power == 1.0 { u } else { u.powf(power) };
                    Cell::Int((p * f(spec, "k")).floor() as i64 + spec["lo"].as_i64().expect("lo"))
                }
                "cat" => {
                    let levels = spec["levels"].as_array().expect("levels");
                    let u = rng.uniform();
                    let skew = spec.get("skew").and_then(Value::as_bool).unwrap_or(false);
                    let x = if skew { u * u } else { u };
                    let i = (x * levels.len() as f64).floor() as usize;
                    Cell::Str(levels[i].as_str().expect("level").to_string())
                }
                "bool" => Cell::Bool(rng.uniform() < f(spec, "p")),
                "constant" => match &spec["value"] {
                    Value::String(s) => Cell::Str(s.clone()),
                    v => Cell::Num(v.as_f64().expect("value")),
                },
                other => panic!("unknown kind {other}"),
            };
            let m = rng.uniform();
            if m < missing {
                Cell::Missing
            } else if m > 1.0 - infs {
                Cell::Num(if m > 1.0 - infs / 2.0 {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                })
            } else {
                v
            }
        })
        .collect()
}
