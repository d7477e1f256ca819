//! COCO (captions + instances JSON): COCO has no phrase boxes, so phrases are linked as in the
//! paper: a word of the caption naming a category — its name, plural or a listed synonym
//! (`SYNONYMS` in the source) — links to the boxes of ALL that category's instances in the image. Class = the
//! category name. Matching is case-insensitive on whole words, multi-word names as whole-word
//! sequences, the longest name first (so "hot dog" is not a dog, "teddy bear" not a bear); a
//! mention of a category with no instance in the image is not linked. Captions with no linked
//! mention are skipped and counted. Boxes `[x, y, w, h]` become `[x, y, x + w, y + h]`; crowd
//! annotations count as instances; boxes with no area are skipped and counted.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::align::{skip, CaptionItem, Skipped, TextPhrase};
use crate::{Error, Result};

/// The 80 COCO categories, each with the words that name it (singular; regular plurals are
/// added by [`plural`], irregular ones are listed). Ambiguous words ("glass", "bag", "plant",
/// "baseball") are left out; "orange" and "mouse" stay as in common practice.
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "person",
        &[
            "person",
            "people",
            "man",
            "men",
            "woman",
            "women",
            "boy",
            "girl",
            "child",
            "children",
            "kid",
            "baby",
            "babies",
            "toddler",
            "guy",
            "lady",
            "gentleman",
            "gentlemen",
            "adult",
            "teenager",
            "teen",
            "player",
            "skier",
            "snowboarder",
            "surfer",
            "skateboarder",
            "skater",
            "rider",
            "biker",
            "cyclist",
            "bicyclist",
            "athlete",
            "batter",
            "catcher",
            "umpire",
            "chef",
            "worker",
            "officer",
            "policeman",
            "policemen",
            "pedestrian",
            "tourist",
            "passenger",
            "spectator",
            "student",
            "mother",
            "father",
            "son",
            "daughter",
            "bride",
            "groom",
            "soldier",
            "cowboy",
        ],
    ),
    ("bicycle", &["bicycle", "bike"]),
    ("car", &["car", "automobile", "taxi", "cab", "sedan", "suv"]),
    (
        "motorcycle",
        &[
            "motorcycle",
            "motorbike",
            "motor bike",
            "scooter",
            "moped",
            "dirt bike",
        ],
    ),
    (
        "airplane",
        &[
            "airplane",
            "aeroplane",
            "plane",
            "jet",
            "airliner",
            "aircraft",
            "jetliner",
        ],
    ),
    ("bus", &["bus", "busses", "double decker"]),
    ("train", &["train", "locomotive", "tram"]),
    (
        "truck",
        &["truck", "lorry", "pickup truck", "fire truck", "firetruck"],
    ),
    (
        "boat",
        &[
            "boat", "ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "raft",
        ],
    ),
    (
        "traffic light",
        &["traffic light", "stoplight", "stop light", "traffic signal"],
    ),
    ("fire hydrant", &["fire hydrant", "hydrant"]),
    ("stop sign", &["stop sign"]),
    ("parking meter", &["parking meter"]),
    ("bench", &["bench"]),
    (
        "bird",
        &[
            "bird", "pigeon", "seagull", "gull", "duck", "goose", "geese", "parrot", "swan",
            "sparrow", "crow", "eagle", "hawk", "owl",
        ],
    ),
    ("cat", &["cat", "kitten", "kitty"]),
    ("dog", &["dog", "puppy", "pup", "doggy"]),
    ("horse", &["horse", "pony", "foal"]),
    ("sheep", &["sheep", "lamb"]),
    (
        "cow",
        &["cow", "cattle", "bull", "calf", "calves", "ox", "oxen"],
    ),
    ("elephant", &["elephant"]),
    ("bear", &["bear"]),
    ("zebra", &["zebra"]),
    ("giraffe", &["giraffe"]),
    (
        "backpack",
        &["backpack", "back pack", "rucksack", "knapsack"],
    ),
    ("umbrella", &["umbrella", "parasol"]),
    ("handbag", &["handbag", "purse", "hand bag"]),
    ("tie", &["tie", "necktie", "neck tie"]),
    ("suitcase", &["suitcase", "luggage"]),
    ("frisbee", &["frisbee"]),
    ("skis", &["skis", "ski"]),
    ("snowboard", &["snowboard", "snow board"]),
    (
        "sports ball",
        &[
            "sports ball",
            "ball",
            "soccer ball",
            "football",
            "basketball",
            "volleyball",
            "tennis ball",
            "softball",
        ],
    ),
    ("kite", &["kite"]),
    ("baseball bat", &["baseball bat", "bat"]),
    (
        "baseball glove",
        &["baseball glove", "glove", "mitt", "baseball mitt"],
    ),
    ("skateboard", &["skateboard", "skate board"]),
    ("surfboard", &["surfboard", "surf board"]),
    (
        "tennis racket",
        &["tennis racket", "racket", "racquet", "tennis racquet"],
    ),
    ("bottle", &["bottle"]),
    ("wine glass", &["wine glass", "wineglass"]),
    ("cup", &["cup", "mug"]),
    ("fork", &["fork"]),
    ("knife", &["knife", "knives"]),
    ("spoon", &["spoon"]),
    ("bowl", &["bowl"]),
    ("banana", &["banana"]),
    ("apple", &["apple"]),
    ("sandwich", &["sandwich", "burger", "hamburger"]),
    ("orange", &["orange"]),
    ("broccoli", &["broccoli"]),
    ("carrot", &["carrot"]),
    ("hot dog", &["hot dog", "hotdog"]),
    ("pizza", &["pizza"]),
    ("donut", &["donut", "doughnut"]),
    ("cake", &["cake", "cupcake"]),
    ("chair", &["chair", "stool"]),
    ("couch", &["couch", "sofa"]),
    (
        "potted plant",
        &[
            "potted plant",
            "houseplant",
            "house plant",
            "flower pot",
            "flowerpot",
        ],
    ),
    ("bed", &["bed"]),
    ("dining table", &["dining table", "table"]),
    ("toilet", &["toilet"]),
    ("tv", &["tv", "television", "tv set"]),
    ("laptop", &["laptop"]),
    ("mouse", &["mouse", "mice"]),
    ("remote", &["remote", "remote control", "controller"]),
    ("keyboard", &["keyboard"]),
    (
        "cell phone",
        &[
            "cell phone",
            "cellphone",
            "phone",
            "mobile phone",
            "smartphone",
            "smart phone",
        ],
    ),
    ("microwave", &["microwave"]),
    ("oven", &["oven", "stove"]),
    ("toaster", &["toaster"]),
    ("sink", &["sink"]),
    ("refrigerator", &["refrigerator", "fridge"]),
    ("book", &["book"]),
    ("clock", &["clock"]),
    ("vase", &["vase"]),
    ("scissors", &["scissors"]),
    (
        "teddy bear",
        &["teddy bear", "teddy", "teddybear", "stuffed bear"],
    ),
    (
        "hair drier",
        &["hair drier", "hair dryer", "hairdryer", "blow dryer"],
    ),
    ("toothbrush", &["toothbrush", "tooth brush"]),
];

/// Regular English plural of the last word: `-s`, `-es` after s/x/z/ch/sh, `-ies` after a
/// consonant + y. Irregular plurals are listed among the synonyms instead (see the module doc).
pub fn plural(name: &str) -> String {
    let (head, last) = match name.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l),
        None => (String::new(), name),
    };
    let p = if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| last.ends_with(e))
    {
        format!("{last}es")
    } else if last.ends_with('y') && !last[..last.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']) {
        format!("{}ies", &last[..last.len() - 1])
    } else {
        format!("{last}s")
    };
    head + &p
}

/// Words of `text` with their byte ranges: maximal runs of alphanumeric characters,
/// lowercased.
fn words(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((text[s..i].to_lowercase(), s, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Every surface form (lowercase word sequences) → category, longest forms first.
pub struct Linker {
    forms: Vec<(Vec<String>, &'static str)>,
}

impl Default for Linker {
    fn default() -> Self {
        Self::new()
    }
}

impl Linker {
    /// The linker for the 80 COCO categories: every name and synonym, with its regular plural.
    pub fn new() -> Self {
        let mut forms: Vec<(Vec<String>, &'static str)> = Vec::new();
        for &(cat, names) in SYNONYMS {
            for &n in names {
                for f in [n.to_string(), plural(n)] {
                    let w: Vec<String> = f.split(' ').map(str::to_string).collect();
                    if !forms.iter().any(|(g, _)| *g == w) {
                        forms.push((w, cat));
                    }
                }
            }
        }
        forms.sort_by_key(|(w, _)| std::cmp::Reverse(w.len()));
        Linker { forms }
    }

    /// Category mentions in `caption`, left to right, as `(byte range, category)`; at each
    /// word the longest form wins and its words are consumed. Words of a multi-word form must be
    /// separated by spaces or hyphens only.
    pub fn mentions(&self, caption: &str) -> Vec<((usize, usize), &'static str)> {
        let ws = words(caption);
        let mut out = Vec::new();
        let mut i = 0;
        while i < ws.len() {
            let found = self.forms.iter().find(|(form, _)| {
                i + form.len() <= ws.len()
                    && form.iter().enumerate().all(|(k, f)| ws[i + k].0 == *f)
                    && (1..form.len()).all(|k| {
                        caption[ws[i + k - 1].2..ws[i + k].1]
                            .chars()
                            .all(|c| c == ' ' || c == '-')
                    })
            });
            match found {
                Some((form, cat)) => {
                    out.push(((ws[i].1, ws[i + form.len() - 1].2), *cat));
                    i += form.len();
                }
                None => i += 1,
            }
        }
        out
    }
}

#[derive(Deserialize)]
struct Image {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct Instance {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
}

#[derive(Deserialize)]
struct Category {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct Instances {
    images: Vec<Image>,
    annotations: Vec<Instance>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Caption {
    id: u64,
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct Captions {
    annotations: Vec<Caption>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Dataset {
        path: path.to_path_buf(),
        msg: format!("not a COCO {what} file: {e}"),
    })
}

/// Read `instances_*.json` and `captions_*.json` of one split; images are `images/<file_name>`.
/// Items come in the order of the instances file's images, each image's captions in file
/// order; the id of an item is the caption's id. What is left out is counted in `skipped`.
pub fn read_coco(
    instances: &Path,
    captions: &Path,
    images: &Path,
    skipped: &mut Skipped,
) -> Result<Vec<CaptionItem>> {
    let inst: Instances = read_json(instances, "instances")?;
    let caps: Captions = read_json(captions, "captions")?;
    let bad = |path: &Path, msg: String| Error::Dataset {
        path: path.to_path_buf(),
        msg,
    };
    let names: HashMap<u64, &str> = inst
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    // Boxes per (image, category name).
    let mut boxes: HashMap<(u64, &str), Vec<[f32; 4]>> = HashMap::new();
    for a in &inst.annotations {
        let Some(&name) = names.get(&a.category_id) else {
            return Err(bad(
                instances,
                format!(
                    "annotation id {}: category_id {} is not in \"categories\"",
                    a.id, a.category_id
                ),
            ));
        };
        let [x, y, w, h] = a.bbox;
        if !(a.bbox.iter().all(|v| v.is_finite()) && w > 0.0 && h > 0.0) {
            skip(skipped, "instance boxes with no area");
            continue;
        }
        boxes.entry((a.image_id, name)).or_default().push([
            x as f32,
            y as f32,
            (x + w) as f32,
            (y + h) as f32,
        ]);
    }
    let mut by_image: BTreeMap<u64, Vec<&Caption>> = BTreeMap::new();
    for c in &caps.annotations {
        by_image.entry(c.image_id).or_default().push(c);
    }
    let known: std::collections::HashSet<u64> = inst.images.iter().map(|i| i.id).collect();
    let orphans: usize = by_image
        .iter()
        .filter(|(id, _)| !known.contains(id))
        .map(|(_, c)| c.len())
        .sum();
    if orphans > 0 {
        if orphans == caps.annotations.len() {
            return Err(bad(
                captions,
                format!(
                    "none of its captions is for an image of {} (are both files of the same split?)",
                    instances.display()
                ),
            ));
        }
        *skipped
            .entry("captions of images missing from the instances file".into())
            .or_default() += orphans;
    }
    let linker = Linker::new();
    let mut items = Vec::new();
    for img in &inst.images {
        for c in by_image.get(&img.id).map(Vec::as_slice).unwrap_or(&[]) {
            let mut phrases = Vec::new();
            for (range, cat) in linker.mentions(&c.caption) {
                match boxes.get(&(img.id, cat)) {
                    Some(b) => phrases.push(TextPhrase {
                        range,
                        class: cat.to_string(),
                        boxes: b.clone(),
                    }),
                    None => skip(skipped, "category mentions with no instance in the image"),
                }
            }
            if phrases.is_empty() {
                skip(skipped, "captions with no linked category");
                continue;
            }
            items.push(CaptionItem {
                id: c.id.to_string(),
                image: img.file_name.clone(),
                image_path: images.join(&img.file_name),
                caption: c.caption.clone(),
                phrases,
                origin: format!("{} caption id {}", captions.display(), c.id),
            });
        }
    }
    Ok(items)
}
