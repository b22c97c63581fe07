//! `weir users`: the SASL users in the data dir, while the broker runs or
//! not.

use std::process::ExitCode;

use super::args::{UsersAction, UsersArgs};

pub fn main(args: &UsersArgs) -> ExitCode {
    use weir::security::users::{validate_username, UserStore};
    let store = match UserStore::open(&args.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir users: {}: {e}", args.data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let result = match &args.action {
        UsersAction::Add {
            name,
            password,
            iterations,
        } => {
            if let Err(e) = validate_username(name) {
                eprintln!("weir users: {e}");
                return ExitCode::FAILURE;
            }
            let password = match password {
                Some(p) => p.clone(),
                None => {
                    let mut line = String::new();
                    if let Err(e) = std::io::stdin().read_line(&mut line) {
                        eprintln!("weir users: cannot read the password: {e}");
                        return ExitCode::FAILURE;
                    }
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                eprintln!("weir users: the password is empty");
                return ExitCode::FAILURE;
            }
            store
                .add_user(name, &password, *iterations)
                .map(|()| println!("user {name} saved"))
        }
        UsersAction::Delete { name } => match store.delete(name, None) {
            Ok(true) => {
                println!("user {name} deleted");
                Ok(())
            }
            Ok(false) => {
                eprintln!("weir users: no user {name}");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        UsersAction::List => {
            for (name, mechs) in store.list() {
                let m: Vec<String> = mechs
                    .iter()
                    .map(|(m, i)| format!("{}(iterations={i})", m.name()))
                    .collect();
                println!("{name}\t{}", m.join(","));
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir users: {e}");
            ExitCode::FAILURE
        }
    }
}
