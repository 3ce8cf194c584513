//! What a run leaves behind: the table on stdout (and the comparison with an earlier report), the JSON report and
//! the report directory's bench.json and bench.svg. The earlier report is read before anything starts, so a wrong
//! `--compare` costs nothing.

use std::path::Path;

use super::error::Error;
use super::options::Options;
use crate::report::{Report, SCHEMA};

/// The report `--compare` names, checked to be of this schema.
pub(crate) fn read_report(path: &Path) -> Result<Report, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadReport { path: path.to_owned(), source })?;
    let report: Report =
        serde_json::from_str(&text).map_err(|source| Error::NotAReport { path: path.to_owned(), source })?;
    if report.schema != SCHEMA {
        return Err(Error::Schema { path: path.to_owned(), schema: report.schema });
    }
    Ok(report)
}

/// Prints the table, and the change of every figure against `compare` (read from `compare_path`) if given.
#[expect(clippy::print_stdout, reason = "the table is the command's output")]
pub(crate) fn print(report: &Report, compare: Option<(&Path, &Report)>) {
    print!("{}", report.table());
    if let Some((path, old)) = compare {
        println!("\ncompared with {}:", path.display());
        print!("{}", report.compare(old));
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::WriteFile { path: path.to_owned(), source })
}

/// Writes the JSON report and the report directory, as the options ask.
pub(crate) fn write_outputs(opts: &Options, report: &Report) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(report).map_err(Error::EncodeReport)?;
    if let Some(path) = &opts.json {
        write(path, &json)?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(dir) = &opts.report {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir { path: dir.clone(), source })?;
        write(&dir.join("bench.json"), &json)?;
        let svg = crate::svg::render(report).map_err(Error::DrawSvg)?;
        write(&dir.join("bench.svg"), &svg)?;
        eprintln!("report: {}/bench.svg and bench.json", dir.display());
    }
    Ok(())
}
