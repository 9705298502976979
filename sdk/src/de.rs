//! A serde `Deserializer` over route parameters, for [`Path`](crate::Path).
//!
//! Parameters are strings; this parses them into whatever the author asks
//! for: one value (`Path<u64>`, `Path<String>`) when the route has exactly
//! one parameter, a tuple in the order of the pattern, or a struct or map by
//! name.

use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
use serde::de::{self, Error as _, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

pub(crate) struct ParamsDeserializer<'de>(pub(crate) &'de [(String, String)]);

impl<'de> ParamsDeserializer<'de> {
    fn single(&self) -> Result<ValueDeserializer<'de>, Error> {
        match self.0 {
            [(_, value)] => Ok(ValueDeserializer(value)),
            params => Err(Error::custom(format!(
                "expected 1 path parameter, the route has {}",
                params.len()
            ))),
        }
    }

    fn values(&self) -> SeqDeserializer<impl Iterator<Item = ValueDeserializer<'de>>, Error> {
        SeqDeserializer::new(self.0.iter().map(|(_, v)| ValueDeserializer(v)))
    }
}

macro_rules! single_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.single()?.$method(visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for ParamsDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(MapDeserializer::new(
            self.0
                .iter()
                .map(|(k, v)| (k.as_str(), ValueDeserializer(v))),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(self.values())
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        if len != self.0.len() {
            return Err(Error::custom(format!(
                "expected {len} path parameters, the route has {}",
                self.0.len()
            )));
        }
        visitor.visit_seq(self.values())
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    single_value! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_option
        deserialize_identifier
    }

    forward_to_deserialize_any! { unit ignored_any }
}

/// One parameter's value.
pub(crate) struct ValueDeserializer<'de>(&'de str);

macro_rules! parse_value {
    ($($method:ident => $visit:ident($ty:ty))*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.0.parse::<$ty>() {
                    Ok(value) => visitor.$visit(value),
                    Err(_) => Err(Error::custom(format!(
                        "cannot parse `{}` as {}",
                        self.0,
                        stringify!($ty)
                    ))),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    parse_value! {
        deserialize_bool => visit_bool(bool)
        deserialize_i8 => visit_i8(i8)
        deserialize_i16 => visit_i16(i16)
        deserialize_i32 => visit_i32(i32)
        deserialize_i64 => visit_i64(i64)
        deserialize_i128 => visit_i128(i128)
        deserialize_u8 => visit_u8(u8)
        deserialize_u16 => visit_u16(u16)
        deserialize_u32 => visit_u32(u32)
        deserialize_u64 => visit_u64(u64)
        deserialize_u128 => visit_u128(u128)
        deserialize_f32 => visit_f32(f32)
        deserialize_f64 => visit_f64(f64)
        deserialize_char => visit_char(char)
    }

    forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn from<T: de::DeserializeOwned>(list: &[(&str, &str)]) -> Result<T, String> {
        T::deserialize(ParamsDeserializer(&params(list))).map_err(|e| e.to_string())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Ids {
        user: String,
        post: u32,
        draft: Option<bool>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Open,
        Closed,
    }

    #[test]
    fn single_values() {
        assert_eq!(from::<u64>(&[("id", "42")]), Ok(42));
        assert_eq!(from::<String>(&[("id", "a b")]), Ok("a b".into()));
        assert_eq!(from::<Kind>(&[("k", "open")]), Ok(Kind::Open));
        assert_eq!(from::<Option<i8>>(&[("n", "-3")]), Ok(Some(-3)));
        assert_eq!(
            from::<u64>(&[("id", "abc")]),
            Err("cannot parse `abc` as u64".into())
        );
        assert_eq!(
            from::<u64>(&[("a", "1"), ("b", "2")]),
            Err("expected 1 path parameter, the route has 2".into())
        );
        assert!(from::<Kind>(&[("k", "ajar")]).is_err());
        let _ = Kind::Closed;
    }

    #[test]
    fn tuples_structs_and_maps() {
        assert_eq!(
            from::<(String, u32)>(&[("a", "x"), ("b", "7")]),
            Ok(("x".into(), 7))
        );
        assert_eq!(
            from::<(String, u32)>(&[("a", "x")]),
            Err("expected 2 path parameters, the route has 1".into())
        );
        assert_eq!(
            from::<Ids>(&[("user", "ann"), ("post", "9")]),
            Ok(Ids {
                user: "ann".into(),
                post: 9,
                draft: None
            })
        );
        assert!(
            from::<Ids>(&[("user", "ann")])
                .unwrap_err()
                .contains("missing field `post`")
        );
        let map = from::<HashMap<String, String>>(&[("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(map["b"], "2");
    }
}
