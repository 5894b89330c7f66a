//! What each column of `input.csv` means and the rules for its values.
//! Messages name the row and column and say how to fix; they never repeat the value.

use super::problem::Findings;
use chrono::{DateTime, NaiveDate};
use std::net::IpAddr;

pub const WORKFLOW_KEY: &str = "workflowDefinitionKey";
pub const REFERENCE: &str = "customerInternalReference";
pub const REFERENCE_MAX_CHARS: usize = 100;
pub const REFERENCE_FORBIDDEN: &[char] = &['<', '>', '"', '/', ';', '`', '%', '{', '}', '|'];
pub const IMAGE_COLUMNS: &[&str] = &["frontImage", "backImage", "faceImage"];
const CONSENT_COLUMNS: &[&str] = &[
    "userConsentUserIp",
    "userConsentUserLocationCountry",
    "userConsentUserLocationState",
    "userConsentConsentObtained",
    "userConsentConsentObtainedAt",
];
const PREPARED_PREFIX: &str = "preparedData.";

/// The role of a header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    WorkflowKey,
    Reference,
    /// An image column; `allows_pdf` for images of documents (front and back).
    Image {
        allows_pdf: bool,
    },
    ConsentIp,
    ConsentCountry,
    ConsentState,
    ConsentObtained,
    ConsentObtainedAt,
    Prepared,
    Unknown,
}

impl Column {
    pub fn of(name: &str) -> Column {
        match name {
            WORKFLOW_KEY => Column::WorkflowKey,
            REFERENCE => Column::Reference,
            "frontImage" | "backImage" => Column::Image { allows_pdf: true },
            "faceImage" => Column::Image { allows_pdf: false },
            "userConsentUserIp" => Column::ConsentIp,
            "userConsentUserLocationCountry" => Column::ConsentCountry,
            "userConsentUserLocationState" => Column::ConsentState,
            "userConsentConsentObtained" => Column::ConsentObtained,
            "userConsentConsentObtainedAt" => Column::ConsentObtainedAt,
            _ if is_prepared_name(name) => Column::Prepared,
            _ => Column::Unknown,
        }
    }
}

/// Shaped like a column name: a letter, then letters, digits, `_` or `.`, at most 64 characters.
/// Anything else in a header cell (an e-mail, a number, words with spaces) may be a value.
pub fn looks_like_column_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn is_prepared_name(name: &str) -> bool {
    name.strip_prefix(PREPARED_PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    })
}

/// For an unknown header, the known name it most likely meant (same letters, other case or spacing).
pub fn suggest_column(name: &str) -> Option<String> {
    let folded = fold(name);
    let known = [WORKFLOW_KEY, REFERENCE].into_iter().chain(IMAGE_COLUMNS.iter().copied()).chain(CONSENT_COLUMNS.iter().copied());
    if let Some(hit) = known.into_iter().find(|k| fold(k) == folded) {
        return Some(hit.to_owned());
    }
    let lower = name.trim().to_ascii_lowercase();
    lower.strip_prefix("prepareddata.").map(|rest| format!("{PREPARED_PREFIX}{}", rest.trim()))
}

fn fold(name: &str) -> String {
    name.chars().filter(|c| !c.is_whitespace() && *c != '_').flat_map(char::to_lowercase).collect()
}

/// Checks one non-empty value. `name` is the header name (used for prepared-data rules).
pub fn check_value(column: Column, name: &str, value: &str, row: usize, out: &mut Findings) {
    let at = Some(row);
    let col = Some(name);
    match column {
        Column::WorkflowKey => {
            if is_excel_scientific(value) {
                out.error(at, col, "excel_scientific_notation", excel_number_message());
            } else if !is_positive_integer(value) {
                out.error(
                    at,
                    col,
                    "invalid_workflow_key",
                    "must be a positive whole number such as 10015 (the workflow key from the Jumio Portal)",
                );
            }
        }
        Column::Reference => check_reference(value, row, out),
        Column::ConsentIp => {
            if value.parse::<IpAddr>().is_err() {
                out.error(at, col, "invalid_ip_address", "must be the end user's IPv4 or IPv6 address, such as 203.0.113.7 or 2001:db8::1");
            }
        }
        Column::ConsentCountry => {
            if !(value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase())) {
                out.error(
                    at,
                    col,
                    "invalid_country_code",
                    "must be a 3-letter ISO 3166-1 alpha-3 country code in capitals, such as USA or DEU",
                );
            }
        }
        Column::ConsentObtained => {
            if value != "yes" && value != "no" {
                out.error(at, col, "invalid_consent_value", "must be exactly `yes` or `no` (lower case)");
            }
        }
        Column::ConsentObtainedAt => {
            if looks_like_excel_date(value) {
                out.error(at, col, "excel_date_format", excel_date_message("an RFC 3339 timestamp such as 2022-07-20T17:20:35.000Z"));
            } else if DateTime::parse_from_rfc3339(value).is_err() {
                out.error(
                    at,
                    col,
                    "invalid_timestamp",
                    "must be an ISO-8601 / RFC 3339 timestamp with a time zone, such as 2022-07-20T17:20:35.000Z",
                );
            }
        }
        Column::Prepared => check_prepared(name, value, row, out),
        Column::ConsentState | Column::Image { .. } | Column::Unknown => {}
    }
}

fn check_reference(value: &str, row: usize, out: &mut Findings) {
    let at = Some(row);
    let col = Some(REFERENCE);
    let chars = value.chars().count();
    if chars > REFERENCE_MAX_CHARS {
        out.error(at, col, "reference_too_long", format!("is {chars} characters long; shorten it to at most {REFERENCE_MAX_CHARS}"));
    }
    let mut bad: Vec<char> = value.chars().filter(|c| REFERENCE_FORBIDDEN.contains(c)).collect();
    bad.dedup();
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().map(|c| format!("`{c}`")).collect();
        out.error(at, col, "reference_forbidden_character", format!("contains {}; remove every one of <>\"/;`%{{}}|", shown.join(", ")));
    }
}

fn check_prepared(name: &str, value: &str, row: usize, out: &mut Findings) {
    let at = Some(row);
    let col = Some(name);
    let field = &name[PREPARED_PREFIX.len()..];
    if is_excel_scientific(value) {
        out.error(at, col, "excel_scientific_notation", excel_number_message());
        return;
    }
    let is_date_field = field.rsplit('.').next().is_some_and(|last| last.to_ascii_lowercase().contains("date"));
    if is_date_field && looks_like_excel_date(value) {
        out.error(at, col, "excel_date_format", excel_date_message("YYYY-MM-DD, such as 1990-01-31"));
        return;
    }
    match field {
        "dateOfBirth" if !is_iso_date(value) => {
            out.error(at, col, "invalid_date", "must be a real date written YYYY-MM-DD, such as 1990-01-31");
        }
        "phoneNumber" if !is_phone_number(value) => {
            out.error(
                at,
                col,
                "invalid_phone_number",
                "must be 8 to 15 digits with an optional leading +, no spaces or dashes, such as +15031234567",
            );
        }
        "email" if !is_email(value) => {
            out.error(at, col, "invalid_email", "must be an e-mail address such as name@example.com");
        }
        _ => {}
    }
}

fn excel_number_message() -> String {
    "is in scientific notation (like 1.5031E+10), which Excel writes for long numbers; format the column as Text in Excel or fix the value in a text editor, then export again".to_owned()
}

fn excel_date_message(wanted: &str) -> String {
    format!("looks like a date reformatted by Excel (like 01/31/1990); write it as {wanted}")
}

fn is_positive_integer(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.bytes().any(|b| b != b'0')
}

/// Excel's display of a long number: one digit, optional decimals, `E+` and an exponent.
pub fn is_excel_scientific(value: &str) -> bool {
    let Some((mantissa, exponent)) = value.split_once(['E', 'e']) else { return false };
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    int.len() == 1
        && int.bytes().all(|b| b.is_ascii_digit())
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !exponent.is_empty()
        && exponent.len() <= 3
        && exponent.bytes().all(|b| b.is_ascii_digit())
}

/// `1/31/1990`, `31.01.90`, `31-01-1990`: day/month/year orders that Excel produces.
fn looks_like_excel_date(value: &str) -> bool {
    let parts: Vec<&str> = value.split(['/', '.', '-']).collect();
    parts.len() == 3
        && !value.contains(' ')
        && parts[0].len() <= 2
        && parts[1].len() <= 2
        && matches!(parts[2].len(), 2 | 4)
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        || value.contains('/') && value.split([' ', 'T']).next().is_some_and(|d| d.split('/').count() == 3)
}

fn is_iso_date(value: &str) -> bool {
    value.len() == 10 && value.as_bytes()[4] == b'-' && value.as_bytes()[7] == b'-' && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

fn is_phone_number(value: &str) -> bool {
    let digits = value.strip_prefix('+').unwrap_or(value);
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else { return false };
    let clean = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '@' || c == ',' || c == '<' || c == '>');
    clean(local) && clean(domain) && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excel_scientific_is_recognised_only_in_excels_shape() {
        for v in ["1.5031E+10", "1.50312E+10", "1E+10", "9.9e+12"] {
            assert!(is_excel_scientific(v), "{v}");
        }
        for v in ["15031234567", "E+10", "12E45", "1.5E", "abc", "1.5E+1234"] {
            assert!(!is_excel_scientific(v), "{v}");
        }
    }

    #[test]
    fn prepared_names_are_dotted_identifiers() {
        assert_eq!(Column::of("preparedData.address.city"), Column::Prepared);
        assert_eq!(Column::of("preparedData.email"), Column::Prepared);
        assert_eq!(Column::of("preparedData."), Column::Unknown);
        assert_eq!(Column::of("preparedData..x"), Column::Unknown);
        assert_eq!(Column::of("FrontImage"), Column::Unknown);
    }

    #[test]
    fn unknown_headers_get_a_suggestion() {
        assert_eq!(suggest_column("FrontImage").as_deref(), Some("frontImage"));
        assert_eq!(suggest_column("customer_internal_reference").as_deref(), Some("customerInternalReference"));
        assert_eq!(suggest_column("nickname"), None);
    }
}
