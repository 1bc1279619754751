fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/sqlraft.proto");
    tonic_prost_build::configure()
        .bytes(".sqlraft.v1.RaftBatch.messages")
        .compile_protos(&["../../proto/sqlraft.proto"], &["../../proto"])?;
    Ok(())
}
