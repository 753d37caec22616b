//! PATCH bodies by content type. Strategic merge patch is treated as a JSON merge patch (RFC 7386):
//! the difference only matters for lists with merge keys (containers, ports), which Bulkhead never
//! patches. Server-side apply (`application/apply-patch+yaml`) is approximated as create-or-merge:
//! no field ownership, no conflicts between managers.
use super::status::ApiError;

/// The patch flavours a client can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` (applied as a merge patch).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, approximated as create-or-merge).
    Apply,
}

impl PatchKind {
    /// From the request's `Content-Type` (parameters such as `; charset=utf-8` ignored).
    pub fn from_content_type(ct: &str) -> Result<PatchKind, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
            _ => Err(ApiError::unsupported_media(ct)),
        }
    }
}

/// Parses a patch body into JSON: YAML for server-side apply (JSON is YAML), JSON otherwise.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    match kind {
        PatchKind::Apply => serde_yaml::from_slice::<serde_json::Value>(body)
            .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}"))),
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}"))),
    }
}

/// Applies `patch` (already parsed with [`parse_body`]) to `doc`.
pub fn apply(
    kind: PatchKind,
    doc: &mut serde_json::Value,
    patch: &serde_json::Value,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| ApiError::invalid(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Ok(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml"),
            Ok(PatchKind::Apply)
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain").map_err(|e| e.code),
            Err(415)
        );
    }

    #[test]
    fn merge_patch_semantics() {
        let mut doc = json!({"spec": {"a": 1, "b": [1, 2]}, "status": {"x": "y"}});
        let p = parse_body(
            PatchKind::Merge,
            br#"{"spec": {"a": null, "b": [3], "c": "n"}}"#,
        )
        .expect("parse");
        apply(PatchKind::Merge, &mut doc, &p).expect("apply");
        assert_eq!(
            doc,
            json!({"spec": {"b": [3], "c": "n"}, "status": {"x": "y"}})
        );
        assert!(apply(PatchKind::Merge, &mut doc, &json!([1])).is_err());
    }

    #[test]
    fn json_patch_semantics() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}});
        let p = parse_body(
            PatchKind::Json,
            br#"[{"op": "add", "path": "/metadata/labels/b", "value": "2"}, {"op": "remove", "path": "/metadata/labels/a"}]"#,
        )
        .expect("parse");
        apply(PatchKind::Json, &mut doc, &p).expect("apply");
        assert_eq!(doc, json!({"metadata": {"labels": {"b": "2"}}}));
        let failing = json!([{"op": "test", "path": "/metadata/labels/b", "value": "3"}]);
        assert_eq!(
            apply(PatchKind::Json, &mut doc, &failing).map_err(|e| e.code),
            Err(422)
        );
        assert_eq!(
            apply(PatchKind::Json, &mut doc, &json!({"op": 1})).map_err(|e| e.code),
            Err(400)
        );
        assert!(parse_body(PatchKind::Json, b"{nope").is_err());
    }

    #[test]
    fn apply_patch_is_yaml() {
        let p = parse_body(PatchKind::Apply, b"metadata:\n  labels:\n    a: b\n").expect("yaml");
        let mut doc = json!({"metadata": {"name": "x"}});
        apply(PatchKind::Apply, &mut doc, &p).expect("apply");
        assert_eq!(
            doc,
            json!({"metadata": {"name": "x", "labels": {"a": "b"}}})
        );
    }
}
