//! `raftq certs`: write a cluster CA, node certificate and gossip key, or one
//! more certificate signed by the CA already in `--out`: a node certificate
//! (`--name N`) or an API client certificate (`--client NAME`).

use std::path::Path;

use anyhow::Context;

use raftq::cli::CertsArgs;
use raftq::tls::certs::{
    write_client_cert, write_cluster_certs, write_gossip_key, write_named_cert, CA_CERT_FILE,
    CA_KEY_FILE, GOSSIP_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
};

/// Run `raftq certs` and print the paths it wrote.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let out = args.out.as_path();
    if let Some(name) = args.client.as_deref() {
        write_client_cert(out, name).with_context(|| {
            format!("writing client certificate {name:?} into {}", out.display())
        })?;
        print_written(out, &[&format!("{name}.pem"), &format!("{name}-key.pem")]);
        return Ok(());
    }
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
            // Every node of a cluster needs the same key: never replace one.
            let written = write_gossip_key(out)
                .with_context(|| format!("writing {GOSSIP_KEY_FILE} into {}", out.display()))?;
            if written {
                print_written(out, &[GOSSIP_KEY_FILE]);
            } else {
                println!("kept the existing gossip key {}", out.join(GOSSIP_KEY_FILE).display());
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
