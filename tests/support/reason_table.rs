//! The reasons docs/troubleshooting.md documents, read from its two tables (Ready=True and
//! Ready=False): the reason, the Ready status and the Argo CD health of its row. Included with
//! `#[path = "support/reason_table.rs"] mod reason_table;`.

/// (reason, Ready status, Argo CD health) for every reason of the tables, in order; a row's
/// first cell names one or more backticked reasons.
pub fn documented_reasons() -> Vec<(String, &'static str, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/troubleshooting.md");
    let text = std::fs::read_to_string(path).expect("read docs/troubleshooting.md");
    let mut reasons = vec![];
    let mut ready = None;
    for line in text.lines() {
        if line.starts_with("| Ready=True reason") {
            ready = Some("True");
        } else if line.starts_with("| Ready=False reason") {
            ready = Some("False");
        } else if !line.starts_with('|') {
            ready = None;
        } else if let Some(status) = ready {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells[0].starts_with("---") {
                continue;
            }
            let health = cells.last().unwrap().to_string();
            for name in cells[0].split('`').skip(1).step_by(2) {
                reasons.push((name.to_string(), status, health.clone()));
            }
        }
    }
    reasons
}
