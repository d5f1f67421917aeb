//! Bencode round trips over generated values and mutation of valid documents: decoding our own
//! encoding gives the same value back, and no mutated input panics or decodes to a value that
//! does not re-encode to a decodable document.

use std::collections::BTreeMap;

use srtp_edge::control::bencode::{BencodeError, Value, MAX_DEPTH};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn gen(rng: &mut Rng, depth: usize) -> Value {
    let kind = if depth >= 4 {
        rng.below(2)
    } else {
        rng.below(4)
    };
    match kind {
        0 => Value::Int(match rng.below(4) {
            0 => 0,
            1 => i64::MIN,
            2 => i64::MAX,
            _ => rng.next() as i64,
        }),
        1 => Value::Bytes((0..rng.below(20)).map(|_| rng.next() as u8).collect()),
        2 => Value::List((0..rng.below(5)).map(|_| gen(rng, depth + 1)).collect()),
        _ => {
            let mut d = BTreeMap::new();
            for _ in 0..rng.below(5) {
                let k: Vec<u8> = (0..rng.below(6))
                    .map(|_| b'a' + rng.below(26) as u8)
                    .collect();
                d.insert(k, gen(rng, depth + 1));
            }
            Value::Dict(d)
        }
    }
}

#[test]
fn generated_values_round_trip() {
    let mut rng = Rng(0xb3c0_de00_0000_0001);
    for _ in 0..3000 {
        let v = gen(&mut rng, 0);
        let enc = v.encode();
        assert_eq!(Value::decode(&enc).unwrap(), v);
    }
}

#[test]
fn mutations_never_panic() {
    let mut rng = Rng(99);
    let mut decoded = 0;
    for _ in 0..5000 {
        let mut b = gen(&mut rng, 0).encode();
        if b.is_empty() {
            continue;
        }
        let i = rng.below(b.len() as u64) as usize;
        match rng.below(3) {
            0 => b[i] = b"ield:0123456789-x"[rng.below(17) as usize],
            1 => {
                b.remove(i);
            }
            _ => b.truncate(i),
        }
        if let Ok(v) = Value::decode(&b) {
            decoded += 1;
            assert_eq!(Value::decode(&v.encode()).unwrap(), v);
        }
    }
    assert!(decoded > 50, "some mutations stay valid ({decoded})");
}

#[test]
fn nesting_limit_is_exact() {
    // Dictionaries count towards the same bound: d1:k d1:k ... i0e e e.
    let dicts = |n: usize| format!("{}i0e{}", "d1:k".repeat(n), "e".repeat(n));
    assert!(Value::decode(dicts(MAX_DEPTH).as_bytes()).is_ok());
    assert_eq!(
        Value::decode(dicts(MAX_DEPTH + 1).as_bytes()),
        Err(BencodeError::TooDeep)
    );
    let lists = |n: usize| format!("{}{}", "l".repeat(n), "e".repeat(n));
    assert!(Value::decode(lists(MAX_DEPTH).as_bytes()).is_ok());
    assert_eq!(
        Value::decode(lists(MAX_DEPTH + 1).as_bytes()),
        Err(BencodeError::TooDeep)
    );
}
