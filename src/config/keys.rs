//! Every key the config types accept, read from the types themselves: a serde
//! `Deserializer` that answers each struct with all of its field names (which serde's
//! derive hands to `deserialize_struct`) and each field with a made-up value, walking
//! the whole `Config` tree. The README test holds the config reference table to it, so a
//! key added anywhere in the types fails the test until it is documented.
//!
//! Made-up values can be refused (a duration parser, an action name): the walk then
//! starts again with the next candidate for the path that refused, until one passes.
//! Enums are walked once per variant position, so every variant's keys are seen.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::Config;

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

#[derive(Default)]
struct State {
    keys: BTreeSet<String>,
    branches: BTreeSet<String>,
    variant: usize,
    candidate: HashMap<String, usize>,
    refused: Option<String>,
    /// The last path given a made-up value: blamed when a refusal comes from outside a
    /// visitor (a custom `deserialize` parsing the value it got).
    last: Option<String>,
}

const STRINGS: [&str; 6] = [
    "1s",
    "pull",
    "a",
    "127.0.0.1:1",
    "http://127.0.0.1:1",
    "RS256",
];
/// 0..6 strings, then a number, a bool, an empty map, an empty list.
const CANDIDATES: usize = STRINGS.len() + 4;

/// Leaf keys (whose values are not mappings of known keys), as `a.b[].c` paths.
pub fn leaf_keys() -> Result<BTreeSet<String>, String> {
    let state = RefCell::new(State::default());
    for variant in 0..6 {
        state.borrow_mut().variant = variant;
        state.borrow_mut().candidate.clear();
        loop {
            state.borrow_mut().refused = None;
            let walk = Walk {
                st: &state,
                path: "",
                record: true,
                spanned: false,
            };
            match Config::deserialize(walk) {
                Ok(_) => break,
                Err(e) => {
                    let mut st = state.borrow_mut();
                    let Some(path) = st.refused.take().or_else(|| st.last.take()) else {
                        return Err(format!("the key walk failed: {e}"));
                    };
                    let n = st.candidate.entry(path.clone()).or_insert(0);
                    *n += 1;
                    if *n >= CANDIDATES {
                        return Err(format!(
                            "no made-up value passes for `{path}` ({e}): add one to STRINGS in src/config/keys.rs"
                        ));
                    }
                }
            }
        }
    }
    let st = state.into_inner();
    Ok(st.keys.difference(&st.branches).cloned().collect())
}

#[derive(Clone, Copy)]
struct Walk<'a> {
    st: &'a RefCell<State>,
    path: &'static str,
    record: bool,
    spanned: bool,
}

// `path` is leaked per distinct path: a test-only walk over a few hundred keys.
#[allow(clippy::needless_lifetimes)]
impl<'a> Walk<'a> {
    fn at(self, path: String) -> Walk<'a> {
        Walk {
            path: Box::leak(path.into_boxed_str()),
            spanned: false,
            ..self
        }
    }
    fn child(self, key: &str) -> Walk<'a> {
        let p = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        if self.record {
            self.st.borrow_mut().keys.insert(p.clone());
        }
        self.at(p)
    }
    fn branch(self) {
        if !self.record {
            return;
        }
        let mut st = self.st.borrow_mut();
        let mut p = self.path;
        st.branches.insert(p.to_owned());
        while let Some(parent) = p.strip_suffix("[]") {
            st.branches.insert(parent.to_owned());
            p = parent;
        }
    }
    fn candidate(self) -> usize {
        self.st.borrow_mut().last = Some(self.path.to_owned());
        self.st
            .borrow()
            .candidate
            .get(self.path)
            .copied()
            .unwrap_or(0)
    }
    fn refused<T>(self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            let mut st = self.st.borrow_mut();
            if st.refused.is_none() {
                st.refused = Some(self.path.to_owned());
            }
        }
        r
    }
}

impl<'de, 'a> de::Deserializer<'de> for Walk<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        if self.spanned {
            return v.visit_map(SpannedMap {
                walk: self,
                step: 0,
            });
        }
        let r = match self.candidate() {
            n if n < STRINGS.len() => v.visit_str(STRINGS[n]),
            n if n == STRINGS.len() => v.visit_u64(1),
            n if n == STRINGS.len() + 1 => v.visit_bool(true),
            n if n == STRINGS.len() + 2 => v.visit_map(Fields {
                walk: self,
                fields: &[],
                i: 0,
            }),
            _ => v.visit_seq(Elements {
                walk: self,
                left: 0,
            }),
        };
        self.refused(r)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = v.visit_bool(self.candidate() % 2 == 0);
        self.refused(r)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = v.visit_u64(1);
        self.refused(r)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = v.visit_i64(1);
        self.refused(r)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = v.visit_f64(1.0);
        self.refused(r)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = v.visit_str(STRINGS[self.candidate() % STRINGS.len()]);
        self.refused(r)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(Walk {
            spanned: name == "__yaml_spanned",
            ..self
        })
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let walk = self.at(format!("{}[]", self.path));
        v.visit_seq(Elements { walk, left: 1 })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            walk: self,
            left: len,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            walk: self,
            fields: &[],
            i: 0,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.branch();
        v.visit_map(Fields {
            walk: self,
            fields,
            i: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let pick = variants
            .get(self.st.borrow().variant % variants.len().max(1))
            .copied()
            .unwrap_or("");
        let r = v.visit_enum(Variant { walk: self, pick });
        self.refused(r)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit_struct
        tuple_struct identifier
    }
}

struct Fields<'a> {
    walk: Walk<'a>,
    fields: &'static [&'static str],
    i: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.i) {
            Some(f) => k.deserialize((*f).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, v: V) -> Result<V::Value, Error> {
        let field = self.fields.get(self.i).copied().unwrap_or("");
        self.i += 1;
        v.deserialize(self.walk.child(field))
    }
}

struct Elements<'a> {
    walk: Walk<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.walk).map(Some)
    }
}

/// What serde-saphyr's deserializer feeds `Spanned<T>`: a marker, the value, two locations.
struct SpannedMap<'a> {
    walk: Walk<'a>,
    step: usize,
}

const SPANNED_KEYS: [&str; 4] = [
    "__serde_saphyr_private_spanned",
    "value",
    "referenced",
    "defined",
];

impl<'de> de::MapAccess<'de> for SpannedMap<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        match SPANNED_KEYS.get(self.step) {
            Some(key) => k.deserialize((*key).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, v: V) -> Result<V::Value, Error> {
        let step = self.step;
        self.step += 1;
        let inner = Walk {
            spanned: false,
            record: self.walk.record && step == 1,
            ..self.walk
        };
        v.deserialize(inner)
    }
}

struct Variant<'a> {
    walk: Walk<'a>,
    pick: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = Error;
    type Variant = Variant<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(self.pick.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.walk.branch();
        seed.deserialize(self.walk.child(self.pick))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        self.walk.branch();
        v.visit_seq(Elements {
            walk: self.walk.child(self.pick),
            left: len,
        })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.walk.branch();
        let walk = self.walk.child(self.pick);
        walk.branch();
        v.visit_map(Fields { walk, fields, i: 0 })
    }
}

/// Keys a README table documents: the backticked names of each row's first cell, with
/// `{a,b\|c}` expanded and `.x` meaning "beside the cell's first key".
pub fn documented_keys(readme: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let Some(cell) = line.split(" | ").next() else {
            continue;
        };
        let mut parent = String::new();
        for (i, item) in cell.split('`').skip(1).step_by(2).enumerate() {
            let item = item.replace("\\|", ",");
            let full = if let Some(rel) = item.strip_prefix('.') {
                if parent.is_empty() {
                    rel.to_owned()
                } else {
                    format!("{parent}.{rel}")
                }
            } else {
                item.clone()
            };
            if i == 0 {
                // `a.{b,c}`: beside `a.b`, i.e. in `a`; `a.b`: in `a`.
                parent = match full.split_once('{') {
                    Some((head, _)) => head.trim_end_matches('.').to_owned(),
                    None => full
                        .rfind('.')
                        .map_or(String::new(), |cut| full[..cut].to_owned()),
                };
            }
            for k in expand(&full) {
                out.insert(k);
            }
        }
    }
    out
}

fn expand(item: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (item.find('{'), item.find('}')) else {
        return vec![item.to_owned()];
    };
    if close < open {
        return vec![item.to_owned()];
    }
    let (head, tail) = (&item[..open], &item[close + 1..]);
    item[open + 1..close]
        .split(',')
        .flat_map(|alt| expand(&format!("{head}{}{tail}", alt.trim())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_sees_nested_optional_and_variant_keys() {
        let keys = leaf_keys().expect("walk");
        for k in [
            "listeners[].address",
            "listeners[].tls.cert",
            "upstreams[].credentials.password_env",
            "routes[].match",
            "server.threads",
            "policy.directories",
            "auth.issuers[].keys.jwks_uri",
        ] {
            assert!(keys.contains(k), "{k} not in {keys:#?}");
        }
        assert!(!keys.contains("listeners[]") && !keys.contains("server"));
    }

    #[test]
    fn readme_cells_expand() {
        let t =
            "| `a[].b`, `.c.{d,e\\|f}` | x |\n| `g` / `.h` | y |\n| `i.{j,k}`, `.l[].m` | z |\n";
        let got: Vec<String> = documented_keys(t).into_iter().collect();
        assert_eq!(
            got,
            ["a[].b", "a[].c.d", "a[].c.e", "a[].c.f", "g", "h", "i.j", "i.k", "i.l[].m"]
        );
    }

    #[test]
    fn every_config_key_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Configuration reference")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Configuration reference section");
        let documented = documented_keys(section);
        let missing: Vec<String> = leaf_keys()
            .expect("walk")
            .into_iter()
            .filter(|k| !documented.contains(k))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md's config reference table lacks these keys (add a row or a brace entry for each):\n  {}",
            missing.join("\n  ")
        );
    }
}
