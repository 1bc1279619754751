//! Statement parameters without ceremony: [`params!`](crate::params) and
//! [`named_params!`](crate::named_params).

/// Positional parameters for [`Statement::with_params`](crate::Statement::with_params):
/// each argument becomes a [`Value`](crate::Value) through `From` (integers, floats,
/// `bool`, strings, `&[u8]`, `Vec<u8>`, `Option<T>` as NULL or the value).
///
/// ```
/// use sqlraft::{Statement, Value, params};
///
/// let blob: &[u8] = b"\x00\x01";
/// let s = Statement::with_params("INSERT INTO t VALUES (?, ?, ?, ?, ?)",
///     params![7, "seven", true, blob, None::<i64>]);
/// assert_eq!(s.params, sqlraft::Params::Positional(vec![
///     Value::Integer(7), Value::Text("seven".into()), Value::Integer(1),
///     Value::Blob(vec![0, 1]), Value::Null,
/// ]));
/// ```
#[macro_export]
macro_rules! params {
    () => { ::std::vec::Vec::<$crate::Value>::new() };
    ($($value:expr),+ $(,)?) => {
        ::std::vec![$($crate::Value::from($value)),+]
    };
}

/// Named parameters for [`Statement::with_named`](crate::Statement::with_named).
///
/// ```
/// use sqlraft::{Statement, Value, named_params};
///
/// let s = Statement::with_named("SELECT * FROM t WHERE id = :id AND on_ = :on",
///     named_params! { "id" => 3, ":on" => false });
/// assert_eq!(s.params, sqlraft::Params::Named(vec![
///     ("id".to_string(), Value::Integer(3)),
///     (":on".to_string(), Value::Integer(0)),
/// ]));
/// ```
#[macro_export]
macro_rules! named_params {
    () => { ::std::vec::Vec::<(::std::string::String, $crate::Value)>::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {
        ::std::vec![$((::std::string::String::from($name), $crate::Value::from($value))),+]
    };
}
