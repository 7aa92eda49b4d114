//! `#[serde(...)]` on parameters goes to the fields, on the function to the
//! struct.

use graphile_worker::task;

fn default_width() -> u32 {
    800
}

#[task(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
async fn resize_image(
    image_id: i64,
    #[serde(default = "default_width")] width: u32,
    #[serde(rename = "fmt", skip_serializing_if = "Option::is_none")] format: Option<String>,
    #[serde(default)] tags: Vec<String>,
) {
    let _ = (image_id, width, format, tags);
}

fn main() {
    let job: ResizeImage = serde_json::from_value(serde_json::json!({"imageId": 7})).unwrap();
    assert_eq!(job.image_id, 7);
    assert_eq!(job.width, 800);
    assert_eq!(job.format, None);
    assert!(job.tags.is_empty());
    assert_eq!(
        serde_json::to_value(&job).unwrap(),
        serde_json::json!({"imageId": 7, "width": 800, "tags": []})
    );
    let named: ResizeImage =
        serde_json::from_value(serde_json::json!({"imageId": 1, "fmt": "png"})).unwrap();
    assert_eq!(named.format.as_deref(), Some("png"));
    let unknown =
        serde_json::from_value::<ResizeImage>(serde_json::json!({"imageId": 1, "nope": 1}));
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `nope`")
    );
}
