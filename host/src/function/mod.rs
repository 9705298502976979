pub(crate) mod compiled;
pub(crate) mod records;
