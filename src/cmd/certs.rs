//! `raftq certs`: write a cluster CA and node certificate, or one more
//! certificate (`--name N`) signed by the CA already in `--out`.

use std::path::Path;

use anyhow::Context;

use raftq::cli::CertsArgs;
use raftq::tls::certs::{
    write_cluster_certs, write_named_cert, CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
};

/// Run `raftq certs` and print the paths it wrote.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let out = args.out.as_path();
    match args.name.as_deref() {
        Some(name) => {
            write_named_cert(out, name, &args.hosts)
                .with_context(|| format!("writing certificate {name:?} into {}", out.display()))?;
            print_written(out, &[&format!("{name}.pem"), &format!("{name}-key.pem")]);
        }
        None => {
            let ca_exists = out.join(CA_CERT_FILE).exists() && out.join(CA_KEY_FILE).exists();
            write_cluster_certs(out, &args.hosts)
                .with_context(|| format!("writing cluster certificates into {}", out.display()))?;
            if ca_exists {
                println!("kept the existing ca {}", out.join(CA_CERT_FILE).display());
                print_written(out, &[NODE_CERT_FILE, NODE_KEY_FILE]);
            } else {
                print_written(out, &[CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE]);
            }
        }
    }
    Ok(())
}

fn print_written(out: &Path, files: &[&str]) {
    for file in files {
        println!("wrote {}", out.join(file).display());
    }
}
