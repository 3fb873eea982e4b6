pub mod fees;
